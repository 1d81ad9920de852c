"""Benchmarks of mas_jupyter against Jupyter terminals and bare references."""
