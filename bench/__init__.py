"""Benchmarks run by hand (never a timed test): event-consumer against the textbook loop and
against the database and decode limits (`python -m bench.run`), and a memory soak
(`python -m bench.soak`). See bench/README.md."""
