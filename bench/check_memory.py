"""Benchmark: the Python memory one idle check costs, and the startup steps' CPU.

Builds the daemon in this process (config, store, recorder, figures,
scheduler) for ``--small`` and then ``--large`` HTTP checks aimed at a closed
loopback port (interval 1 h, so no test starts), and prints the memory
tracemalloc traces for each, their difference per check, and the files that
hold it. ``--tested`` first records one passing test per check, so the
store's pending coverage and the metric values are counted too. Nothing is
sent anywhere.

    .venv/bin/python bench/check_memory.py
    .venv/bin/python bench/check_memory.py --tested --large 21000
    .venv/bin/python bench/check_memory.py --source /tmp/other-tree   # measure another tree
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def write_config(checks: int, workdir: Path) -> Path:
    lines = [
        "timezone: UTC",
        f"storage: sqlite://{workdir}/probed-{checks}.db",
        "listen: 127.0.0.1:0",
        "defaults: {interval: 3600s, timeout: 5s, failures_to_down: 2}",
        "services:",
    ]
    for service in range(2):
        lines += [f"  svc{service:02d}:", "    objective: 99.5", "    checks:"]
        for i in range(checks // 2):
            url = f"http://127.0.0.1:9/ok/c{i:06d}"
            lines.append(f'      - {{name: c{i:06d}, type: http, url: "{url}"}}')
    path = workdir / f"probed-{checks}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def build(checks: int, workdir: Path, tested: bool) -> tuple[int, Any, Any]:
    """The daemon's per-check state for ``checks`` checks: (traced bytes, snapshot, daemon)."""
    from probed import config as config_mod
    from probed.daemon.lifecycle import Daemon
    from probed.daemon.runner import TestOutcome
    from probes.base import ProbeResult, Transcript

    path = write_config(checks, workdir)
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    steps: list[tuple[str, float]] = []
    cpu = time.process_time()
    config = config_mod.load(str(path))
    steps.append(("config", time.process_time() - cpu))
    daemon = await Daemon.open(str(path), config)
    cpu = time.process_time()
    await daemon.recorder.start([(s.name, c) for s, c in config.all_checks()])
    steps.append(("store and recorder", time.process_time() - cpu))
    cpu = time.process_time()
    await daemon.accountant.refresh(config)
    steps.append(("figures", time.process_time() - cpu))
    cpu = time.process_time()
    daemon.scheduler.set_checks((s.name, c) for s, c in config.all_checks())
    steps.append(("scheduler", time.process_time() - cpu))
    await asyncio.sleep(0.2)
    if tested:
        passed = TestOutcome(started_at=time.time(), duration=0.01, result=ProbeResult.passed())
        for service, check in config.all_checks():
            await daemon.recorder.record(service.name, check, passed, Transcript())
        await daemon.store.flush()  # as the daemon does every 2 s, and then refreshes
        await daemon.accountant.refresh(config)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    print(f"{checks} checks: " + ", ".join(f"{name} {s:.2f} CPU s" for name, s in steps))
    return used, tracemalloc.take_snapshot(), daemon


async def main(args: argparse.Namespace) -> None:
    tracemalloc.start(1)
    with tempfile.TemporaryDirectory() as tmp:
        small, before, first = await build(args.small, Path(tmp), args.tested)
        large, after, second = await build(args.large, Path(tmp), args.tested)
        per_check = (large - small) / (args.large - args.small)
        print(
            f"traced: {small / 2**20:.1f} MiB at {args.small}, {large / 2**20:.1f} MiB at {args.large}"
        )
        print(f"bytes per check: {per_check:.0f}")
        for stat in after.compare_to(before, "filename")[: args.top]:
            print(f"  {stat.size_diff / args.large:7.0f} B/check  {stat.traceback}")
        for daemon in (first, second):
            await daemon.scheduler.stop(0.1)
            await daemon.store.close()


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=1000, help="checks in the first daemon")
    p.add_argument("--large", type=int, default=11000, help="checks in the second daemon")
    p.add_argument("--tested", action="store_true", help="record one passing test per check")
    p.add_argument("--top", type=int, default=12, help="files shown")
    p.add_argument("--source", type=Path, default=ROOT, help="the source tree to measure")
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse()
    sys.path.insert(0, str(arguments.source))
    asyncio.run(main(arguments))
