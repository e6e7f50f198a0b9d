"""`make bench` (`python -m bench`): the benchmarks, their baselines and correctness gates."""
