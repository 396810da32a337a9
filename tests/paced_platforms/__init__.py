"""Platforms that keep to a rate limit: the rate limit tests and `bench/rate_bench.py` run them."""
