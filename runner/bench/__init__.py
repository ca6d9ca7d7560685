"""Benchmarks of the product itself: a task's phases, and a short loop."""
