"""Benchmarks of the shmstore data path; run `python -m bench.report` from the repository root.

This package is never installed: it is imported from a checkout only.
"""
