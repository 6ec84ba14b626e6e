"""A command whose reader stops early (``glora-replay LOG --json | head``) ends quietly, as other Unix tools do."""

from __future__ import annotations

import os
import sys

EXIT_BROKEN_PIPE = 141
"""The status a shell reports for a writer stopped by SIGPIPE (128 + 13)."""


def end_on_broken_pipe() -> int:
    """Called where ``BrokenPipeError`` is caught: points standard output at the null device, so that the
    interpreter's flush at exit finds no closed pipe to report, and returns the status to exit with."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE
