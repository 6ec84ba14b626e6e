"""The command-line programs: ``glora`` and ``glora-replay``."""
