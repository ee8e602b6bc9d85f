"""The ``fairstream`` command line: its composition root (``main``), shared options, ``config`` and ``status``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.cli.main import main

__all__ = ["main"]


def __getattr__(name: str) -> object:
    # ``main`` is imported on first use, not here: the command modules of the other packages
    # import ``services.cli.options``, and importing ``services.cli.main`` (every command)
    # from this package's start would import them again from inside themselves (a cycle).
    if name == "main":
        from services.cli.main import main

        globals()["main"] = main
        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
