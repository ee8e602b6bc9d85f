"""``make soak``: the fault harness for as long as you like, faults drawn at random.

A federation on its own stack takes a steady publish load while faults are
injected one after another, chosen at random (seeded: a failing run is
reproduced with its seed) from the same catalogue as the fault tests. The load is
two: the fault tests' (releases with zips of eight packages, about three a
second) and, with ``--rate`` (default 200), ``BulkLoad``'s releases of 20,000
distinct packages a second at that rate, served by a metadata-only region
``meta`` of two workers and the directory (every other region verifies and
skips them). At the end the load stops, the federation quiesces and the
checker reads the whole history; the exit status is 1 unless every count is
zero.

    uv run python -m tests.faults.soak --minutes 30 --seed 7 --rate 200
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from streams.faults import FAULT_POINTS
from tests.faults.harness import BulkLoad, FaultFederation, Load, Poller, running_federation

Fault = Callable[[FaultFederation, random.Random], str]


def workers(federation: FaultFederation) -> list[str]:
    return [name for names in federation.regions.values() for name in names]


def kill_at_point(federation: FaultFederation, rng: random.Random) -> str:
    worker, point = rng.choice(workers(federation)), rng.choice(FAULT_POINTS)
    reached = federation.kill_at(worker, point, nth=rng.randint(1, 3))
    return f"kill -9 {worker} at {point}" + ("" if reached else " (not reached)")


def kill_anywhere(federation: FaultFederation, rng: random.Random) -> str:
    worker = rng.choice(workers(federation))
    federation.kill_9(worker)
    return f"kill -9 {worker}"


def pause_broker(federation: FaultFederation, rng: random.Random) -> str:
    seconds = rng.uniform(3, 15)
    federation.pause_broker(seconds)
    return f"broker paused {seconds:.0f} s"


def restart_store(federation: FaultFederation, rng: random.Random) -> str:
    downtime = rng.uniform(1, 10)
    federation.restart_store(downtime)
    return f"store restarted after {downtime:.0f} s down"


def origin_fault(federation: FaultFederation, rng: random.Random) -> str:
    mode, seconds = rng.choice(["down", "5xx", "trickle"]), rng.uniform(5, 20)
    federation.origin_fault(mode, seconds)
    return f"origin {mode} {seconds:.0f} s"


def rebalance(federation: FaultFederation, rng: random.Random) -> str:
    region = rng.choice([r for r, names in federation.regions.items() if len(names) == 2])
    federation.rebalance_storm(hold=rng.uniform(2, 8), region=region)
    return f"rebalance storm in {region}"


def replay(federation: FaultFederation, rng: random.Random) -> str:
    region = rng.choice(sorted(federation.regions))
    federation.replay(region)
    return f"replay {region} from offset 0"


FAULTS: tuple[Fault, ...] = (
    kill_at_point,
    kill_anywhere,
    pause_broker,
    restart_store,
    origin_fault,
    rebalance,
    replay,
)


def soak(work_dir: Path, minutes: float, seed: int, console: Console, rate: float = 200.0) -> bool:
    rng = random.Random(seed)
    injected: Counter[str] = Counter()
    with running_federation(work_dir, loaded=rate > 0) as federation:
        progress = Progress(
            TextColumn("[bold]soak[/] seed {task.fields[seed]}"),
            BarColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[last]}"),
            console=console,
        )
        bulk = BulkLoad(federation, rate=rate) if rate > 0 else contextlib.nullcontext()
        started = time.monotonic()
        end = started + minutes * 60
        with progress, Load(federation), bulk, Poller(federation):
            task = progress.add_task("soak", total=minutes * 60, seed=seed, last="")
            while time.monotonic() < end:
                fault = rng.choice(FAULTS)
                what = fault(federation, rng)
                injected[fault.__name__] += 1
                progress.update(task, completed=minutes * 60 - (end - time.monotonic()), last=what)
                time.sleep(rng.uniform(2, 10))
        loaded_seconds = time.monotonic() - started
        console.print("quiescing: waiting until every region serves every acknowledged release")
        quiet_from = time.monotonic()
        federation.wait_until_quiet(timeout=600)
        quiesced = time.monotonic() - quiet_from
        verdict = federation.history()
        table = Table(title=f"soak of {minutes:g} min, seed {seed}")
        table.add_column("count")
        table.add_column("value", justify="right")
        table.add_row("releases acknowledged", str(len(federation.acknowledged)))
        if isinstance(bulk, BulkLoad):
            held = len([a for a in federation.acknowledged if not a.zip_checked])
            table.add_row("  of them the bulk load's", str(held))
            # Offered: what the broker took. The regions' own pace shows in the quiesce time.
            table.add_row("  bulk load offered", f"{held / loaded_seconds:.0f} releases/s")
            table.add_row("  bulk load not acknowledged", str(bulk.failed))
        table.add_row("quiesced (every copy serving everything) after", f"{quiesced:.0f} s")
        table.add_row("observations polled", str(len(federation.observations)))
        for name, count in sorted(injected.items()):
            table.add_row(f"faults: {name}", str(count))
        for name, count in verdict.counts.items():
            table.add_row(name.replace("_", " "), f"[{'green' if count == 0 else 'red'}]{count}")
        console.print(table)
        if not verdict.clean:
            console.print(str(verdict))
        return verdict.clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="how long faults go on")
    parser.add_argument("--seed", type=int, default=None, help="reproduce a run [default: random]")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep logs here")
    parser.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="bulk load, releases a second of distinct packages (0: none) [default: 200]",
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 16)
    logging.basicConfig(level=logging.WARNING)
    console = Console(stderr=True)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        clean = soak(args.work_dir, args.minutes, seed, console, args.rate)
    else:
        with tempfile.TemporaryDirectory(prefix="fairstream-soak-") as work_dir:
            clean = soak(Path(work_dir), args.minutes, seed, console, args.rate)
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
