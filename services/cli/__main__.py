"""``python -m services.cli``: the ``fairstream`` command."""

from __future__ import annotations

from services.cli.main import main

main()
