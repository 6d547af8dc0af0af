"""Objectives, DeepSpeed engine, EMA, checkpoints, logging and the training loop."""
