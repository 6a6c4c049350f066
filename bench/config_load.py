"""CPU seconds to load a generated config of N HTTP checks (loopback targets only).

    python bench/config_load.py --checks 100000 [--profile 25]

Writes the same config as ``bench/http_checks.py`` (its ``write_config``) into a
temporary directory and times :func:`probed.config.load` on it with
``time.process_time``; ``--profile N`` prints cProfile's N costliest functions.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_checks import write_config

from probed import config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checks", type=int, default=100_000, help="HTTP checks (default 100000)")
    p.add_argument("--services", type=int, default=1, help="services the checks are split over")
    p.add_argument("--profile", type=int, default=0, help="print the N costliest functions")
    args = p.parse_args()
    args.storage = args.storage_password_file = None
    args.interval, args.timeout, args.fail_ratio = 60.0, 5.0, 0.0
    args.concurrency, args.workers = 1000, 1
    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(args, 8080, Path(tmp))
        profiler = cProfile.Profile() if args.profile else None
        start = time.process_time()
        if profiler:
            profiler.enable()
        loaded = config.load(path, secrets=False)
        if profiler:
            profiler.disable()
        spent = time.process_time() - start
    print(f"{sum(len(s.checks) for s in loaded.services.values())} checks: {spent:.2f} CPU s")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
