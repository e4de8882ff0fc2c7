"""Run every benchmark (benchmarks/bench_*.py) and print each measured ratio beside its goal.

Ratios within one run, not absolute times: machines here are noisy. Each bench file's
`run(quick)` returns rows {"name", "measured", "goal", "met", "detail"}. `--quick` is a smoke
run (under ~2 minutes in all); results go to a JSON file (default benchmarks/results.json,
not committed), and `--markdown` prints the table docs/performance.md carries.

    python benchmarks/run.py [--quick] [--json FILE] [--markdown] [NAME ...]
    python benchmarks/run.py --render FILE    # markdown table of a saved run, nothing re-run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _legacy_rows(name: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """A bench that still returns a flat dict: one informational row per number."""
    return [
        {"name": f"{name}: {key}", "measured": value, "goal": "", "met": True, "detail": ""}
        for key, value in result.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]


def machine() -> dict[str, Any]:
    """What the numbers were measured on: threads, cores, load."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(v, 2) for v in load],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def _shown(measured: Any) -> str:
    """A measured value with enough digits to judge it against its goal (0.969 is not 0.97)."""
    if isinstance(measured, float):
        return f"{measured:.3f}" if abs(measured) < 10 else f"{measured:.1f}"
    return str(measured)


def markdown(rows: list[dict[str, Any]], info: dict[str, Any] | None = None, quick: bool = False) -> str:
    """The results as the markdown table docs/performance.md carries, with the machine it ran on."""
    lines = []
    if info:
        lines += [
            f"{'Quick' if quick else 'Full'} run: {info.get('torch_threads')} torch thread(s), "
            f"{info.get('cpu_count')} cores, load average {info.get('load_average_1_5_15')} at the start, "
            f"torch {info.get('torch')}, {info.get('seconds', '?')} s.",
            "",
        ]
    lines += ["| benchmark | measured | goal | met |", "|---|---|---|---|"]
    for row in rows:
        measured = row["measured"]
        shown = _shown(measured)
        lines.append(
            f"| {row['name']} | {shown} | {row['goal']} | "
            f"{'-' if not row['goal'] else ('yes' if row['met'] else '**no**')} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Import each bench_*.py, call its run(quick), print the rows and save them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller data (under ~2 minutes)")
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="where to write all rows")
    parser.add_argument("--markdown", action="store_true", help="also print the rows as a markdown table")
    parser.add_argument("--render", type=Path, metavar="FILE", help="print a saved JSON run as markdown and exit")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1: stable on shared CPUs)"
    )
    parser.add_argument("only", nargs="*", help="benchmark names to run (e.g. classify segment)")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        print(markdown(saved["rows"], saved.get("machine"), saved.get("quick", False)))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    info = machine()
    print(
        f"threads {info['torch_threads']} | cores {info['cpu_count']} | load {info['load_average_1_5_15']} "
        f"| torch {info['torch']} | {'quick' if args.quick else 'full'} run",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if args.only and name not in args.only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== {name}", flush=True)
        result = module.run(quick=args.quick)
        produced = result if isinstance(result, list) else _legacy_rows(name, result)
        for row in produced:
            row = {"bench": name, **row}
            rows.append(row)
            measured = row["measured"]
            shown = _shown(measured)
            verdict = "" if not row["goal"] else ("  ok" if row["met"] else "  NOT MET")
            print(f"  {row['name']}: {shown}  (goal {row['goal'] or '-'}){verdict}", flush=True)
            if row.get("detail"):
                print(f"      {row['detail']}", flush=True)
    info["seconds"] = round(time.perf_counter() - started, 1)
    info["load_average_after"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    args.json.write_text(json.dumps({"machine": info, "quick": args.quick, "rows": rows}, indent=2) + "\n")
    print(f"wrote {len(rows)} rows to {args.json} in {info['seconds']} s (load after: {info['load_average_after']})")
    if args.markdown:
        print(markdown(rows, info, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
