"""Benchmarks: a synthetic corpus generator with planted ground truth and quality evaluations."""
