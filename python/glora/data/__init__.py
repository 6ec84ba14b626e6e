"""Reading users' data files for ``glora run``: tables and saved datasets, class labels, and seeded splits."""
