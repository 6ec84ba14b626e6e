"""Wrapping a model: the config, target selection, subnets, the search space of a model, merging."""
