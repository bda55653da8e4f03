"""The twisthost benchmark harness; ``benchmarks/run.py`` is its command line."""
