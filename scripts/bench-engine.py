#!/usr/bin/env python3
"""Cloak's engines against onnxruntime in Python, per cached model, side by side in one run.

For each model in the model cache that has reference inputs (scripts/fetch-models.py, then
scripts/reference-outputs.py), and each thread count (1 and 2 by default), this alternates rounds
of three engines on the same input tensors:

  - tract through cloak-engine,
  - ONNX Runtime through cloak-engine (the `ort` crate, loading the very library the Python
    package ships: onnxruntime/capi/libonnxruntime.so.*),
  - onnxruntime from Python (intra_op_num_threads=N, inter_op_num_threads=1, sequential),

and prints median latencies with two ratios: Cloak-onnxruntime / Python onnxruntime (what the
backend adds; the target is at most 1.05) and tract / onnxruntime (the engine choice), as a
Markdown table (`--json`: one object per model and thread count).

  cargo build -p cloak-engine --example latency [--release]
  .venv/bin/python scripts/bench-engine.py [--models a,b] [--threads 1,2] [--runs 30] [--rounds 3]

The binary defaults to target/release/examples/latency if it exists, else the debug one (whose
dependencies, tract included, are built at opt-level 2).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

import numpy as np
import onnxruntime as ort

import ort_baseline

ROOT = pathlib.Path(__file__).resolve().parent.parent
DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
          "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_, "FP16": np.float16}


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CLOAK_MODEL_CACHE", ROOT / ".cache/models"))


def load_inputs(ref_dir: pathlib.Path) -> dict[str, np.ndarray]:
    manifest = json.loads((ref_dir / "manifest.json").read_text())
    feeds = {}
    for entry in manifest["inputs"]:
        data = np.frombuffer((ref_dir / entry["file"]).read_bytes(), dtype=DTYPES[entry["datatype"]])
        feeds[entry["name"]] = data.reshape(entry["shape"])
    return feeds


def time_python(onnx: pathlib.Path, feeds, threads: int, warmup: int, runs: int) -> list[float]:
    return ort_baseline.time_runs(ort_baseline.session(onnx, threads), feeds, warmup, runs)


def time_cloak(binary: pathlib.Path, engine: str, threads: int, onnx: pathlib.Path,
               ref_dir: pathlib.Path, warmup: int, runs: int) -> dict:
    out = subprocess.run([str(binary), str(onnx), str(ref_dir), str(warmup), str(runs),
                          "--engine", engine, "--threads", str(threads),
                          "--onnxruntime-lib", str(ort_baseline.library())],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated model stems (default: every cached one)")
    parser.add_argument("--threads", default="1,2", help="thread counts to measure (1,2)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per round (30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs per round (3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per engine (3)")
    parser.add_argument("--binary", type=pathlib.Path, help="the latency example binary")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    binary = args.binary
    if binary is None:
        release = ROOT / "target/release/examples/latency"
        binary = release if release.exists() else ROOT / "target/debug/examples/latency"
    if not binary.exists():
        print(f"{binary} is missing: cargo build -p cloak-engine --example latency", file=sys.stderr)
        return 2
    cache = cache_dir()
    stems = args.models.split(",") if args.models else sorted(
        p.stem for p in cache.glob("*.onnx") if (cache / f"{p.stem}.ref/manifest.json").exists())
    thread_counts = [int(t) for t in args.threads.split(",")]
    rows = []
    for stem in stems:
        onnx, ref_dir = cache / f"{stem}.onnx", cache / f"{stem}.ref"
        feeds = load_inputs(ref_dir)
        for threads in thread_counts:
            times = {"tract": [], "onnxruntime": [], "python": []}
            errors = {}
            for _ in range(args.rounds):
                for engine in ("tract", "onnxruntime"):
                    if engine in errors:
                        continue
                    try:
                        result = time_cloak(binary, engine, threads, onnx, ref_dir, args.warmup,
                                            args.runs)
                        times[engine] += result["runs_ms"]
                    except subprocess.CalledProcessError as error:
                        reason = (error.stderr or "").strip().splitlines()[-1:] or ["failed"]
                        errors[engine] = reason[0][:120]
                times["python"] += time_python(onnx, feeds, threads, args.warmup, args.runs)
            p50 = {k: (statistics.median(v) if v else None) for k, v in times.items()}
            row = {"model": stem, "threads": threads,
                   "tract_ms_p50": p50["tract"], "cloak_ort_ms_p50": p50["onnxruntime"],
                   "python_ort_ms_p50": p50["python"], "errors": errors}
            if p50["onnxruntime"]:
                row["cloak_ort_over_python"] = p50["onnxruntime"] / p50["python"]
            if p50["tract"]:
                row["tract_over_ort"] = p50["tract"] / p50["python"]
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"cloak-engine ({binary.parent.parent.name}) vs onnxruntime {ort.__version__} in Python, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.rounds} alternating rounds x {args.runs} runs")
    print("| model | threads | tract p50 ms | Cloak-ort p50 ms | Python ort p50 ms "
          "| Cloak-ort / Python ort | tract / ort |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    fmt = lambda v, d=3: "—" if v is None else f"{v:.{d}f}"
    for row in rows:
        tract = fmt(row["tract_ms_p50"]) if "tract" not in row["errors"] else \
            f"does not run ({row['errors']['tract']})"
        print(f"| {row['model']} | {row['threads']} | {tract} | {fmt(row['cloak_ort_ms_p50'])} | "
              f"{fmt(row['python_ort_ms_p50'])} | {fmt(row.get('cloak_ort_over_python'), 2)} | "
              f"{fmt(row.get('tract_over_ort'), 2)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
