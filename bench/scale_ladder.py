"""The scale ladder: the daemon at 10k, 30k and 100k HTTP checks every 60 s, and 10k every 10 s,
each with Prometheus' 15 s scrape running, against a healthy loopback server.

Every rung is one run of ``http_checks.py`` (the real daemon as a subprocess);
a 1-check run first gives the process's base memory, so that "RSS per check"
is what each check adds. Prints one table: tests done/due, schedule lag
p50/p99, loop lag p99 (the 20 ms heartbeats of every process, and of the main
process alone), CPU seconds per 1 000 tests, RSS per check, startup, one
scrape's CPU, failures recorded against the healthy target (must be 0), and
the store's size.

    .venv/bin/python bench/scale_ladder.py                      # 10k, 30k, 100k at 60 s; 10k at 10 s
    .venv/bin/python bench/scale_ladder.py --rungs 10000@60 30000@60 --duration 120
    .venv/bin/python bench/scale_ladder.py --rungs 30000@60 --workers 1 2   # each rung both ways

Loopback only; every rung is bounded (startup, window, scrape and stop deadlines).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_checks

DEFAULT_RUNGS = ("10000@60", "30000@60", "100000@60", "10000@10")


def rung(spec: str) -> tuple[int, float]:
    checks, _, interval = spec.partition("@")
    return int(checks), float(interval or 60)


def one(
    checks: int, interval: float, duration: float, workers: int, extra: list[str]
) -> dict[str, float | int | None]:
    argv = [
        "--checks", str(checks), "--interval", f"{interval:g}", "--duration", f"{duration:g}",
        "--scrape-every", "15", "--server-procs", "1", "--workers", str(workers), *extra,
    ]  # fmt: skip
    print(
        f"\n===== {checks} checks every {interval:g}s for {duration:g}s, workers: {workers}",
        flush=True,
    )
    return http_checks.measure(http_checks.parse_args(argv))


def ms(x: float | int | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x * 1000:.0f} ms"


def row(f: dict[str, float | int | None], base_rss: float, workers: int) -> list[str]:
    def num(key: str) -> float:
        value = f[key]
        return math.nan if value is None else float(value)

    return [
        f"{int(num('checks'))} @ {num('interval'):g}s",
        str(workers),
        f"{100 * num('done_ratio'):.1f} %",
        f"{ms(num('lag_p50'))} / {ms(num('lag_p99'))}",
        f"{ms(num('loop_p99'))} / {ms(num('main_loop_p99'))}",
        f"{num('cpu_per_1000'):.2f}",
        f"{(num('rss_window') - base_rss) / num('checks') / 1024:.2f} KiB",
        f"{num('startup'):.1f} s",
        f"{num('scrape_cpu'):.2f} s ({num('samples_per_check'):.1f}/check)",
        f"{num('failures'):.0f} ({num('failed_rows'):.0f} rows, {num('discarded'):.0f} discarded)",
        f"{num('db_bytes') / 2**20:.1f} MiB",
        f"{num('stop'):.1f} s",
    ]


HEADER = [
    "checks",
    "workers",
    "done/due",
    "lag p50/p99",
    "loop lag p99 all / main",
    "CPU s/1000 tests",
    "RSS/check",
    "startup",
    "scrape CPU",
    "failures",
    "DB size",
    "SIGTERM",
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rungs", nargs="+", default=list(DEFAULT_RUNGS), help="CHECKS@INTERVAL")
    p.add_argument("--duration", type=float, default=120.0, help="seconds measured per rung")
    p.add_argument("--base-duration", type=float, default=5.0, help="the 1-check base run")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="the daemon's workers setting; several values run every rung with each",
    )
    args, extra = p.parse_known_args()
    # the base memory of the process tree: the main process and its workers
    base = {
        n: float(one(1, 10, args.base_duration, n, extra)["rss_window"] or 0) for n in args.workers
    }
    rows = [
        row(one(*rung(spec), args.duration, n, extra), base[n], n)
        for spec in args.rungs
        for n in args.workers
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    bases = ", ".join(f"{mib / 2**20:.1f} MiB (workers {n})" for n, mib in base.items())
    print(f"\nscale ladder, {args.duration:g} s per rung, 15 s scrape; base RSS {bases}")
    for line in (HEADER, ["-" * w for w in widths], *rows):
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
