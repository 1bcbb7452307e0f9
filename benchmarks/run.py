"""`make bench`: run every benchmarks/bench_*.py module's main(), in name order.

python benchmarks/run.py            # all of them
python benchmarks/run.py core       # only bench_core.py (names with or without "bench_")
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE))  # bench modules import harness and floors as top-level modules
    import harness

    available = {p.stem.removeprefix("bench_"): p.stem for p in sorted(HERE.glob("bench_*.py"))}
    wanted = [a.removeprefix("bench_").removesuffix(".py") for a in argv] or list(available)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}")
        return 2
    harness.ensure_wrk()
    for name in wanted:
        importlib.import_module(available[name]).main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
