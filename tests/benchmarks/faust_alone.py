"""Faust's own ceiling on this machine: the worker's consumer with nothing behind it.

A Faust app configured as the node's worker (``streams.node``: the same group settings,
the same prompt fetch, ``noack_take`` of the same batch size and wait, an acknowledgement
per record, commits every second) whose agent does no work at all. ``bench_node`` starts
it as its own process on the bootstrap's topic and times it as it times a worker: from
process start until the group's committed offsets reach the log end. What the worker can
reach in a bootstrap is bounded by this figure, whatever it does with the records.

    python -m tests.benchmarks.faust_alone BROKER_URL TOPIC GROUP DATA_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import faust

from services.logs import LogSettings, configure_logging
from services.serving import run_worker
from streams.node import NodeSettings, faust_broker  # importing it applies the node's patches


def app_for(broker_url: str, topic: str, group: str, data_dir: Path) -> faust.App:
    """The node's Faust app, with an agent that takes batches and acknowledges them."""
    defaults = NodeSettings.__dataclass_fields__
    session_timeout: float = defaults["session_timeout"].default
    batch_size: int = defaults["batch_size"].default
    batch_within: float = defaults["batch_within"].default
    broker, credentials = faust_broker(broker_url)
    app = faust.App(
        group,
        broker=broker,
        broker_credentials=credentials,
        datadir=str(data_dir),
        store="memory://",
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session_timeout,
        broker_heartbeat_interval=max(session_timeout / 6, 0.5),
        broker_commit_interval=defaults["commit_interval"].default,
        producer_acks=-1,
    )
    releases = app.topic(
        topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def take(stream: Any) -> None:
        async for events in stream.noack_take(batch_size, within=batch_within):
            for event in events:
                await stream.ack(event)

    app.agent(releases, name=f"{group}.take")(take)
    return app


def main() -> None:
    broker_url, topic, group, data_dir = sys.argv[1:5]
    logs = LogSettings(level="warning")
    configure_logging(logs)
    run_worker(app_for(broker_url, topic, group, Path(data_dir)), logs=logs)


if __name__ == "__main__":
    main()
