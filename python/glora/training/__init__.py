"""Supernet training and batched subnet evaluation (data handling, path sampling, torchrun)."""
