"""Evaluation: ToyBench, analytic pixel-based scoring of toy-world videos."""
