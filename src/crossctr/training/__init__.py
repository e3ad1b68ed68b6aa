"""Fit loop, training strategies and the run folder."""
