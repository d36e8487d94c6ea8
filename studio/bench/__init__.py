"""Benchmarks behind ``python -m studio bench``: each measures, and reports ratios against a baseline
run in the same process. Tests never assert wall-clock times."""
