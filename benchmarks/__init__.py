"""Benchmarks: one script per question; each checks correctness, times, prints a table and
writes CSV + Markdown under ``benchmarks/results/<device>/``."""
