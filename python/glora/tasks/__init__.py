"""Tasks of ``glora run``: the task interface, the runner (train, search, merge, report, save), each task."""
