"""The ``fairstream`` command line: its composition root (``main.py``, the entry point
``services.cli.main:main``; ``python -m services.cli``), shared options and errors,
``config`` and ``status``."""
