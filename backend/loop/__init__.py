"""Retraining rounds: planned, trained in a child process, gated and logged."""
