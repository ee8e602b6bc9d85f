"""How a ``fairstream`` command shows a user the error that ended it: one sentence on
stderr. A module of its own so that ``main`` (for every command) and the commands that
report an error and go on with their own exit status (``status``) share it.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.text import Text

from schemas.errors import BrokerUnavailableError, FairstreamError, StoreUnavailableError
from services.shared.logs import logs_json

#: What to check when the broker or the store does not answer, after what failed.
_UNAVAILABLE_HINTS: dict[type[FairstreamError], str] = {
    BrokerUnavailableError: "check that the broker runs and that --broker (or "
    "FAIRSTREAM_BROKER_URL) names it; `fairstream dev status` shows the embedded stack",
    StoreUnavailableError: "check that the object store runs and that --store (or "
    "FAIRSTREAM_STORE_URL) names it; `fairstream dev status` shows the embedded stack",
}


def show_error(exc: FairstreamError) -> None:
    """Say what went wrong in one sentence on stderr (and what to check, for a server that
    does not answer); with ``--log-format json``, as an error record."""
    message = str(exc)
    hint = next((h for kind, h in _UNAVAILABLE_HINTS.items() if isinstance(exc, kind)), None)
    if hint:
        message = f"{message}; {hint}"
    if logs_json():
        # A log shipper reading stderr gets the reason as a record like every other.
        logging.getLogger("fairstream").error(message)
        return
    errors = Console(stderr=True, soft_wrap=True)
    errors.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
