"""A command whose reader stops early (``glora-replay LOG --json | head``) ends quietly, as other Unix tools do."""

from __future__ import annotations

import os
import select
import sys
from typing import Callable

EXIT_BROKEN_PIPE = 141
"""The status a shell reports for a writer stopped by SIGPIPE (128 + 13)."""


def run_to_pipe(command: Callable[[], int]) -> int:
    """Run ``command`` and write out what standard output still buffers (left to the interpreter's exit, a closed
    pipe there could only be reported as an ignored exception); where its reader has gone, end quietly with
    :data:`EXIT_BROKEN_PIPE`. Any other ``BrokenPipeError`` is raised as an error like any other."""
    try:
        status = command()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        if not reader_gone():
            raise
        return end_on_broken_pipe()


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
