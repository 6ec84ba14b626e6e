"""Supernet training and batched subnet evaluation.

``config`` (TrainConfig, TrainResult), ``trainer`` (the loop: SupernetTrainer, train_supernet), ``paths`` (which
subnets a step trains), ``losses``, ``checkpoint`` (exact resume), ``batches`` (data handling), ``distributed``
(torchrun), ``gradient_checkpointing``, ``sampling`` (budget-aware draws), ``evaluator`` (SubnetEvaluator).
"""
