#!/usr/bin/env python3
"""tract (through cloak-engine) against onnxruntime, per cached model, side by side in one run.

For each model in the model cache that has reference inputs (scripts/fetch-models.py, then
scripts/reference-outputs.py), this alternates rounds of the two engines on the same input
tensors, one thread each (onnxruntime: intra_op_num_threads=1, inter_op_num_threads=1,
sequential execution; tract is single-threaded), and prints the median latencies and the ratio
tract / onnxruntime as a Markdown table (`--json`: one object per model).

  cargo build -p cloak-engine --example latency [--release]
  .venv/bin/python scripts/bench-engine.py [--models a,b] [--runs 30] [--rounds 3] [--binary PATH]

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
import time

import numpy as np
import onnxruntime as ort

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


def time_ort(onnx: pathlib.Path, feeds, warmup: int, runs: int) -> list[float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1e3)
    return times


def time_tract(binary: pathlib.Path, onnx: pathlib.Path, ref_dir: pathlib.Path, warmup: int,
               runs: int) -> tuple[list[float], float]:
    out = subprocess.run([str(binary), str(onnx), str(ref_dir), str(warmup), str(runs)],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    return result["runs_ms"], result["load_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated model stems (default: every cached one)")
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
    rows = []
    for stem in stems:
        onnx, ref_dir = cache / f"{stem}.onnx", cache / f"{stem}.ref"
        feeds = load_inputs(ref_dir)
        tract_times, ort_times, load_ms = [], [], 0.0
        try:
            for _ in range(args.rounds):
                times, load_ms = time_tract(binary, onnx, ref_dir, args.warmup, args.runs)
                tract_times += times
                ort_times += time_ort(onnx, feeds, args.warmup, args.runs)
        except subprocess.CalledProcessError as error:
            reason = (error.stderr or "").strip().splitlines()[-1:] or ["failed"]
            rows.append({"model": stem, "error": reason[0][:160]})
            continue
        tract_ms, ort_ms = statistics.median(tract_times), statistics.median(ort_times)
        rows.append({"model": stem, "tract_ms_p50": round(tract_ms, 3), "ort_ms_p50": round(ort_ms, 3),
                     "ratio": round(tract_ms / ort_ms, 2), "tract_load_ms": round(load_ms, 1),
                     "runs": len(tract_times)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"tract (cloak-engine, {binary.parent.parent.name}) vs onnxruntime {ort.__version__}, "
          f"1 thread each, {platform.processor() or platform.machine()}, "
          f"{args.rounds} alternating rounds x {args.runs} runs")
    print("| model | tract p50 ms | onnxruntime p50 ms | tract / ort | tract load ms |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['model']} | does not run: {row['error']} | | | |")
            continue
        print(f"| {row['model']} | {row['tract_ms_p50']} | {row['ort_ms_p50']} | {row['ratio']} | "
              f"{row['tract_load_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
