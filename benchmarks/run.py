"""Run every benchmark (benchmarks/bench_*.py) and print the measured ratios.

Ratios within one run, not absolute times: machines here are noisy. `--quick` for a smoke run,
`--json FILE` to keep the numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Import each bench_*.py, call its run(quick), print and optionally save the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller data")
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("only", nargs="*", help="benchmark names to run (e.g. classify generate)")
    args = parser.parse_args()
    results = {}
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if args.only and name not in args.only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== {name}", flush=True)
        results[name] = module.run(quick=args.quick)
        for key, value in results[name].items():
            print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
