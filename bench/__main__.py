"""`make bench`: run every benchmark, print one table, write JSON to bench/results/.

    python -m bench                      # everything (a few minutes)
    python -m bench --quick              # fewer repeats and participants (a smoke run)
    python -m bench --only hotpath,cost  # some topics
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback

from . import RESULTS_DIR, Row, machine

TOPICS = ["hotpath", "coldstart", "assets", "e2e", "sidebyside", "receive_path", "store_path", "feed", "analyze", "outlet", "novelty", "export", "cost"]


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def print_table(rows: list[Row]) -> None:
    header = ("topic", "measure", "value", "baseline", "ratio", "target", "")
    lines = [header]
    for r in rows:
        target = "" if r.target is None else (">= " if r.higher_is_better else "<= ") + f"{r.target:g}x"
        verdict = {True: "ok", False: "MISSED", None: ""}[r.ok]
        baseline = f"{_fmt(r.baseline, r.unit)} ({r.baseline_name})" if r.baseline is not None else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        value = _fmt(r.value, r.unit) + (f"  [{r.note}]" if r.note else "")
        lines.append((r.topic, r.name, value, baseline, ratio, target, verdict))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="framesink benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and participants")
    parser.add_argument("--only", default=",".join(TOPICS), help=f"comma-separated topics ({', '.join(TOPICS)})")
    args = parser.parse_args(argv)
    topics = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(topics) - set(TOPICS)
    if unknown:
        parser.error(f"unknown topic(s): {', '.join(sorted(unknown))}")

    results = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick,
               "rows": [], "details": {}, "errors": {}, "seconds": {}}
    rows: list[Row] = []
    began = time.perf_counter()
    for topic in topics:
        print(f"bench: {topic}...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{topic}")
            if topic == "cost":
                e2e = results["details"].get("e2e", {})
                topic_rows, details = module.run(quick=args.quick,
                                                 receiver_cpu_ms=e2e.get("receiver_cpu_ms_per_frame"))
            else:
                topic_rows, details = module.run(quick=args.quick)
        except Exception as exc:  # one broken topic must not hide the others' numbers
            traceback.print_exc()
            results["errors"][topic] = f"{exc.__class__.__name__}: {exc}"
            continue
        finally:
            results["seconds"][topic] = round(time.perf_counter() - start, 1)
        rows += topic_rows
        results["details"][topic] = details
    results["seconds"]["total"] = round(time.perf_counter() - began, 1)
    results["rows"] = [r.as_dict() for r in rows]

    m = results["machine"]
    print(f"\nframesink bench: {m['nproc']} x {m['cpu']}, Python {m['python']}, "
          f"load average at start {', '.join(f'{x:.1f}' for x in m['load_avg_at_start'] or [])}"
          f"{' (quick)' if args.quick else ''}\n")
    print_table(rows)
    if "cost" in results["details"]:
        print("\n" + results["details"]["cost"]["markdown"])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(results, indent=2, default=str)
    (RESULTS_DIR / f"bench-{stamp}.json").write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    print(f"\nwrote {RESULTS_DIR / f'bench-{stamp}.json'} in {results['seconds']['total']:.0f} s", file=sys.stderr)
    for topic, error in results["errors"].items():
        print(f"bench: {topic} failed: {error}", file=sys.stderr)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
