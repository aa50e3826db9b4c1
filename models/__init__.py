"""Judging data: scorers, training, artifacts, thresholds, quality prediction, evaluation."""
