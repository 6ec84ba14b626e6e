"""Tasks: the end-to-end pipeline (train, search, merge, report) and its data."""
