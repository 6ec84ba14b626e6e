"""The package version, read from the installed distribution metadata (set by Cargo's workspace version)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("glora")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
