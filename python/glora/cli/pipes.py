"""A command whose reader stops early (``glora-replay LOG --json | head``) ends quietly, as other Unix tools do."""

from __future__ import annotations

import os
import select
import sys

EXIT_BROKEN_PIPE = 141
"""The status a shell reports for a writer stopped by SIGPIPE (128 + 13)."""


def flush_output() -> None:
    """Write out what standard output still buffers, inside the command's error handling: left to the
    interpreter's exit, a closed pipe there could only be reported as an ignored exception."""
    sys.stdout.flush()


def reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it, so that a ``BrokenPipeError`` came from
    writing the output rather than from other work of the command (where it is an error like any other)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not hasattr(select, "poll"):  # Windows: no way to tell; report it as an error
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def end_on_broken_pipe() -> int:
    """Where the reader has gone: point standard output at the null device, so that the interpreter's flush at
    exit finds no closed pipe to report, and return the status to exit with."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE
