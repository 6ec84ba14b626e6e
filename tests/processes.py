"""Running a command as a user's shell would, for the tests of what reaches the terminal."""

from __future__ import annotations

import os
import subprocess


def run_into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``argv`` with its standard output a pipe whose reader has gone (as ``| head`` after its lines): every
    write meets a broken pipe. Standard error is captured."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
