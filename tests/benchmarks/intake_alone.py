"""The intake's own ceiling on this machine: the worker's consumer with nothing behind it.

The worker's ``GroupConsumer`` (``streams.intake``: the same group, session timeout, fetch
wait, batch size and wait) polling in a thread of its own and committing each batch, as
the intake does, with no work in between. ``bench_node`` starts it as its own process on
the bootstrap's topic and times it as it times a worker: from process start until the
group's committed offsets reach the log end. What the worker can reach in a bootstrap is
bounded by this figure, whatever it does with the records.

    python -m tests.benchmarks.intake_alone BROKER_URL TOPIC GROUP
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from connectors.kafka_group_consumer import GroupConsumer
from streams.intake import FETCH_WAIT_SECONDS
from streams.node_settings import NodeSettings


def run(broker_url: str, topic: str, group: str, stop: threading.Event) -> None:
    """Poll and commit batches until ``stop``, each poll in the intake's own thread."""
    defaults = NodeSettings.__dataclass_fields__
    batch_size: int = defaults["batch_size"].default
    batch_within: float = defaults["batch_within"].default
    consumer = GroupConsumer(
        broker_url,
        topic,
        group,
        session_timeout=defaults["session_timeout"].default,
        fetch_wait=FETCH_WAIT_SECONDS,
    )
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake") as thread:
        try:
            while not stop.is_set():
                records = thread.submit(consumer.poll, batch_size, batch_within).result()
                ends: dict[int, int] = {}
                for record in records:
                    ends[record.partition] = record.offset + 1
                if ends:
                    thread.submit(consumer.commit, ends).result()
        finally:
            thread.submit(consumer.close).result()


def main() -> None:
    broker_url, topic, group = sys.argv[1:4]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(broker_url, topic, group, stop)


if __name__ == "__main__":
    main()
