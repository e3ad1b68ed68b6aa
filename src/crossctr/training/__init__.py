"""Fit loop, training strategies, checkpoints, and a training run from config to run folder."""
