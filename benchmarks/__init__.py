"""lucid benchmark suite: ``python benchmarks/run.py`` (see run.py)."""
