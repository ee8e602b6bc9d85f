"""Fixtures of the fault tests: a federation on a stack of its own, under load."""

from tests.faults.harness import fault_federation

__all__ = ["fault_federation"]
