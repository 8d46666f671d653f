"""Benchmarks of the model and the streaming worker; ``python -m benchmarks`` writes
``docs/benchmarks.md`` (see ``benchmarks/__main__.py``). ``benchmarks/registry.py`` times the
model registry on its own."""
