"""The baseline Cloak's benchmarks divide by: onnxruntime in this Python process, configured as
Cloak's ONNX Runtime engine is (intra-op threads as given, one inter-op thread, sequential, pool
threads not spinning), and the library it loads. Imported by scripts/bench-engine.py and
scripts/bench-tax.py. (With one thread there is no pool, so spinning changes nothing; with two,
onnxruntime's default spinning makes some small models faster alone and the server slower, see
crates/cloak-engine/src/onnxruntime/mod.rs.)"""
from __future__ import annotations

import pathlib
import time

import onnxruntime as ort


def library() -> pathlib.Path:
    """The shared library inside the onnxruntime package this Python imports."""
    capi = pathlib.Path(ort.__file__).parent / "capi"
    found = sorted(capi.glob("libonnxruntime.so.*"))
    if not found:
        raise SystemExit(f"no libonnxruntime.so.* in {capi}")
    return found[0]


def session(onnx: pathlib.Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])


def time_runs(session: ort.InferenceSession, feeds, warmup: int, runs: int) -> list[float]:
    """Latencies in milliseconds of `runs` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1e3)
    return times
