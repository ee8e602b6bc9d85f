"""The trust root a node is under: its pinned root, then every rotation it verified.

Verified roots are kept in the region's bucket, so a restarted node does not
depend on the trust topic's retention to know which keys it follows; new
rotations are read from the trust topic (one partition, small) to its end.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from threading import Lock

import orjson

from connectors.kafka_reading import read_partition
from connectors.metrics import TRUST_ROOT_EXPIRY
from connectors.object_store import ObjectStore, is_json
from schemas import layout
from schemas.errors import RejectedError
from schemas.trust import TrustRoot, follow_rotations, load_pinned_root

log = logging.getLogger(__name__)
_ROOT_KEY = re.compile(r"trust/roots/v(\d+)\.avro$")


@dataclass(frozen=True)
class RefusedRoot:
    """A record of the trust topic that is not a valid next root."""

    offset: int
    value: bytes
    error: RejectedError


class TrustKeeper:
    """Holds the root in force; ``load`` and ``refresh`` do blocking IO (run them in a thread)."""

    def __init__(self, pinned: bytes, *, store: ObjectStore, broker_url: str, topic: str) -> None:
        self._root = load_pinned_root(pinned)
        self._store = store
        self._broker_url = broker_url
        self._topic = topic
        self._next_offset = 0
        self._lock = Lock()
        # Read when scraped: the expiry of whichever root is in force by then.
        TRUST_ROOT_EXPIRY.set_function(lambda: self._root.expires.timestamp())

    @property
    def root(self) -> TrustRoot:
        return self._root

    def load(self) -> None:
        """Follow the roots this node verified before, from its bucket.

        Raises ``RootRotationError`` if a kept root does not follow from the
        pinned one (the bucket was tampered with, or the pinned root changed).
        """
        kept = sorted(
            (int(match[1]), key)
            for key in self._store.list_keys("trust/roots/")
            if (match := _ROOT_KEY.search(key))
        )
        documents = [body.data for _, key in kept if (body := self._store.get(key))]
        self._root = follow_rotations(self._root, documents)
        position = self._store.get(layout.TRUST_POSITION, complete=is_json)
        if position is not None:
            saved = orjson.loads(position.data)
            # A position read in another trust topic means nothing in this one.
            if saved.get("topic") == self._topic:
                self._next_offset = int(saved["next_offset"])

    def refresh(self) -> list[RefusedRoot]:
        """Read the trust topic past what was read, verify each new root, keep those accepted.

        Returns the records refused, for the rejected topic. Raises
        ``BrokerUnavailableError`` / ``StoreUnavailableError``.
        """
        with self._lock:
            refused = []
            records = read_partition(self._broker_url, self._topic, 0, start=self._next_offset)
            for offset, value in records:
                try:
                    root = follow_rotations(self._root, [value])
                except RejectedError as exc:
                    refused.append(RefusedRoot(offset, value, exc))
                    continue
                if root.version != self._root.version:
                    self._store.put_bytes(
                        layout.trust_root_key(root.version),
                        value,
                        content_type="application/octet-stream",
                    )
                    log.info("trust root v%d accepted (offset %d)", root.version, offset)
                    self._root = root
            if records:
                self._next_offset = records[-1][0] + 1
                self._store.put_bytes(
                    layout.TRUST_POSITION,
                    orjson.dumps({"topic": self._topic, "next_offset": self._next_offset}),
                    content_type="application/json",
                )
            return refused
