"""Platforms the tests of the platform author's kit run: one with a secret and a connection check."""
