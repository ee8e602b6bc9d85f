"""Fixtures of the e2e tests: the federation harness."""

from tests.e2e.harness import federation

__all__ = ["federation"]
