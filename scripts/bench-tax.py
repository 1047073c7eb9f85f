#!/usr/bin/env python3
"""The user's tax with the ONNX Runtime engine: Cloak end to end ÷ plain onnxruntime in Python.

For each model and thread count, in one run on one machine: onnxruntime in this Python process
times the model on inputs shaped as `cloak bench` makes them (batch 1, sequence 128; values do
not change the time of these models), then `cloak bench --engine onnxruntime` measures the same
model in process and end to end over attested TLS and as encrypted (Oblivious HTTP) requests,
each answer's receipt verified; then Python again. The ratios divide Cloak's end-to-end p50s by
the median of the two Python runs (same library: `cloak bench` loads the `libonnxruntime.so` of
the onnxruntime package this Python imports, with the same intra-op threads). Encrypted
requests travel inside the server's TLS, one TLS pass each way as a client's request to a
TLS-terminating balancer; `--ohttp-plain` sends them to the server's plain-HTTP listener for
them, as the balancer forwards them (the server's share, without the client's TLS).

  cargo build --release -p cloak-cli
  .venv/bin/python scripts/bench-tax.py [--models a.onnx,b.onnx] [--threads 1,2] [--iterations 100]
      [--ohttp-plain]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

import numpy as np
import onnxruntime as ort

import ort_baseline

ROOT = pathlib.Path(__file__).resolve().parent.parent
NP = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def feeds_for(session: ort.InferenceSession, seq_len: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    feeds = {}
    for value in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else seq_len)
                 for i, d in enumerate(value.shape)]
        dtype = NP[value.type]
        if dtype == np.float32:
            feeds[value.name] = rng.random(shape, dtype=np.float32)
        elif "mask" in value.name.lower():
            feeds[value.name] = np.ones(shape, dtype=dtype)
        elif "type" in value.name.lower():
            feeds[value.name] = np.zeros(shape, dtype=dtype)
        else:
            feeds[value.name] = rng.integers(1000, 21000, size=shape).astype(dtype)
    return feeds


def time_python(onnx: pathlib.Path, threads: int, runs: int, seq_len: int) -> list[float]:
    session = ort_baseline.session(onnx, threads)
    return ort_baseline.time_runs(session, feeds_for(session, seq_len), 5, runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache = pathlib.Path(os.environ.get("CLOAK_MODEL_CACHE", ROOT / ".cache/models"))
    parser.add_argument("--models", default=f"{cache}/efficientnet-lite0.onnx,{cache}/minilm-l6.onnx")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--cloak", type=pathlib.Path, default=ROOT / "target/release/cloak")
    parser.add_argument("--ohttp-plain", action="store_true",
                        help="send encrypted requests to the server's plain-HTTP listener "
                             "(cloak bench's flag)")
    args = parser.parse_args()
    library = ort_baseline.library()
    print(f"onnxruntime {ort.__version__} ({library.name}), {os.cpu_count()} CPUs; encrypted "
          f"requests {'over plain HTTP' if args.ohttp_plain else 'inside TLS'}")
    print("| model | threads | Python ort p50 ms | Cloak in-process p50 ms | aTLS p50 ms "
          "| encrypted p50 ms | aTLS / Python | encrypted / Python |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        onnx = pathlib.Path(model)
        for threads in [int(t) for t in args.threads.split(",")]:
            before = time_python(onnx, threads, args.iterations, 128)
            out = subprocess.run(
                [str(args.cloak), "bench", "--model", str(onnx), "--engine", "onnxruntime",
                 "--onnxruntime-lib", str(library), "--engine-threads", str(threads),
                 "--iterations", str(args.iterations), "--concurrency", "1", "--window", "1s",
                 "--json"] + (["--ohttp-plain"] if args.ohttp_plain else []),
                check=True, capture_output=True, text=True)
            after = time_python(onnx, threads, args.iterations, 128)
            report = json.loads(out.stdout)[0]
            python = statistics.median(before + after)
            print(f"| {onnx.stem} | {threads} | {python:.2f} | {report['engine_ms_p50']:.2f} | "
                  f"{report['atls_ms_p50']:.2f} | {report['ohttp_ms_p50']:.2f} | "
                  f"{report['atls_ms_p50'] / python:.3f} | {report['ohttp_ms_p50'] / python:.3f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
