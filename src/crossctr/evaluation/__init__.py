"""Scores, per-domain metrics and reports."""
