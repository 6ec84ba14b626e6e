"""Running a command as a user's shell would, for the tests of what reaches the terminal."""

from __future__ import annotations

import os
import subprocess


def run_into_closed_pipe(argv: list[str], unbuffered: bool) -> subprocess.CompletedProcess:
    """Run ``argv`` with its standard output a pipe whose reader has gone (as ``| head`` after its lines): every
    write meets a broken pipe; with ``unbuffered`` False the output is block-buffered (Python's default for a pipe),
    so a short output is written only when flushed. Standard error is captured."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, timeout=120, env=env)
    finally:
        os.close(write_end)
