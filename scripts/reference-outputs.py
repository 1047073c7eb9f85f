#!/usr/bin/env python3
"""Writes onnxruntime reference outputs for the cached models, for the Rust engine to compare against.

For every model that `scripts/fetch-models.py` put in the cache (`$CLOAK_MODEL_CACHE`, default
`<repo>/.cache/models`) this script checks the pinned sha256, builds deterministic inputs (numpy,
fixed seed), runs onnxruntime on one thread (CPUExecutionProvider, intra_op_num_threads=1), and
writes the folder `<cache>/<stem>.ref/` (e.g. `ppocr-rec.ref/` for `ppocr-rec.onnx`):

  manifest.json      {"model": "ppocr-rec.onnx", "model_sha256": ..., "onnxruntime": "1.32.0",
                      "seed": ..., "inputs": [{"name", "datatype", "shape", "file"}, ...],
                      "outputs": [...]}
  in.<name>.bin      one per input, raw little-endian, row-major (C order)
  out.<name>.bin     one per output, the same

`datatype` uses the KServe names (FP32, FP16, FP64, INT8, INT16, INT32, INT64, UINT8, BOOL, ...);
BOOL is one byte (0 or 1) per element. `shape` is the concrete shape; a scalar has shape [].
Characters of a tensor name other than letters, digits, '.', '_' and '-' become '_' in its file
name (the manifest has the exact name and the file).

The inputs are realistic for each model: token ids [CLS]=101 ... [SEP]=102 with attention_mask and
token_type_ids for MiniLM (batch 2, sequence 16, the second row a sentence pair with padding);
synthetic images in each model's normalised range; for Silero VAD a synthetic voiced 16 kHz signal,
with the state and 64-sample context carried over from two earlier 512-sample chunks.

A folder already made for the same model hash, onnxruntime version and recipe is kept (idempotent;
`--force` rewrites it). Folders are written to a temporary name and renamed into place.
`--bench` also times each model (median of 20 runs after warm-up, one thread, the reference
inputs) and writes `<cache>/ort-timings.json`.

Usage:
  .venv/bin/python scripts/fetch-models.py && .venv/bin/python scripts/reference-outputs.py
  .venv/bin/python scripts/reference-outputs.py --models ppocr-rec,minilm-l6 --force --bench
Needs numpy and onnxruntime (both in the project's .venv).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import zlib

import numpy as np
import onnxruntime as ort

REPO = pathlib.Path(__file__).resolve().parent.parent
SEED = 20261127
# Bump when an input recipe changes, so that existing reference folders are rebuilt.
RECIPE_VERSION = 1

KSERVE = {
    np.dtype(np.float16): "FP16", np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
    np.dtype(np.int8): "INT8", np.dtype(np.int16): "INT16", np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64", np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64", np.dtype(np.bool_): "BOOL",
}


def load_registry():
    """The pinned model table of fetch-models.py (one source of truth for names and hashes)."""
    path = pathlib.Path(__file__).resolve().parent / "fetch-models.py"
    sys.dont_write_bytecode = True  # leave no scripts/__pycache__ behind
    spec = importlib.util.spec_from_file_location("cloak_fetch_models", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# Deterministic, realistic inputs
# ---------------------------------------------------------------------------------------------

def text_line_images(rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
    """Uint8 RGB images [batch, height, width, 3]: dark blocky glyphs on a light, noisy ground."""
    img = np.empty((batch, height, width, 3), np.float32)
    for b in range(batch):
        paper = rng.uniform(200, 250, 3)
        ink = rng.uniform(10, 70, 3)
        img[b] = paper
        top, bottom = int(height * 0.2), int(height * 0.8)
        x = int(rng.integers(2, 10))
        while True:
            glyph_w = int(rng.integers(height // 4, height // 2))
            if x + glyph_w >= width - 2:
                break
            # A glyph is a random 5x4 bitmap stretched over its box.
            bitmap = rng.random((5, 4)) < 0.45
            rows = np.linspace(0, 5, bottom - top, endpoint=False).astype(int)
            cols = np.linspace(0, 4, glyph_w, endpoint=False).astype(int)
            mask = bitmap[rows][:, cols]
            box = img[b, top:bottom, x:x + glyph_w]
            box[mask] = ink
            x += glyph_w + int(rng.integers(1, height // 6 + 2))
            if rng.random() < 0.15:  # a space between words
                x += height // 3
    img += rng.normal(0, 8, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def photo_like_images(rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
    """Uint8 RGB images [batch, height, width, 3]: smooth colour fields with edges and noise."""
    out = np.empty((batch, height, width, 3), np.float32)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    for b in range(batch):
        coarse = rng.uniform(0, 255, (8, 8, 3))
        rows = np.minimum((yy[:, 0] * 8).astype(int), 7)
        cols = np.minimum((xx[0] * 8).astype(int), 7)
        field = coarse[rows][:, cols]
        # Box-blur the blocks into smooth regions, then add an object-like disc.
        kernel = max(1, height // 16)
        for axis in (0, 1):
            field = sum(np.roll(field, s, axis=axis) for s in range(-kernel, kernel + 1))
            field /= 2 * kernel + 1
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        field[disc] = field[disc] * 0.3 + rng.uniform(0, 255, 3) * 0.7
        out[b] = field + rng.normal(0, 4, field.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_nchw(images: np.ndarray, mean, std) -> np.ndarray:
    """(pixel - mean) / std per channel, NHWC uint8 -> NCHW float32."""
    x = (images.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def voiced_audio(rng: np.random.Generator, samples: int, rate: int = 16000) -> np.ndarray:
    """A speech-like float32 signal in [-1, 1]: a gliding harmonic source with syllable envelope."""
    t = np.arange(samples) / rate
    f0 = 130 + 30 * np.sin(2 * np.pi * 1.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    source = sum((0.6 / k) * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 2 * np.pi)) ** 2
    signal = 0.3 * envelope * source + rng.normal(0, 0.01, samples)
    return np.clip(signal, -1, 1).astype(np.float32)


def bert_tokens(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Batch 2, sequence 16: a single sentence, and a sentence pair with 4 padding tokens."""
    cls, sep, pad = 101, 102, 0

    def words(n: int) -> list[int]:
        return [int(i) for i in rng.integers(1996, 29612, n)]  # word pieces of the uncased vocab

    row0 = [cls] + words(14) + [sep]
    row1 = [cls] + words(5) + [sep] + words(4) + [sep] + [pad] * 4
    input_ids = np.array([row0, row1], np.int64)
    attention_mask = np.array([[1] * 16, [1] * 12 + [0] * 4], np.int64)
    token_type_ids = np.array([[0] * 16, [0] * 7 + [1] * 5 + [0] * 4], np.int64)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "token_type_ids": token_type_ids}


def silero_chunks(rng: np.random.Generator, chunks: int) -> list[np.ndarray]:
    """576-sample windows [1, 576]: 64 samples of context from the previous window + 512 new."""
    audio = voiced_audio(rng, 512 * chunks)
    context = np.zeros(64, np.float32)
    windows = []
    for k in range(chunks):
        window = np.concatenate([context, audio[512 * k:512 * (k + 1)]])
        windows.append(window[None, :])
        context = window[-64:]
    return windows


def silero_16k_inputs(rng, session) -> dict[str, np.ndarray]:
    """The third chunk of a stream, with the state the model left after the first two."""
    names = {i.name for i in session.get_inputs()}
    windows = silero_chunks(rng, 3)
    state = np.zeros((2, 1, 128), np.float32)
    extra = {"sr": np.array(16000, np.int64)} if "sr" in names else {}
    for window in windows[:2]:
        _, state = session.run(["output", "stateN"], {"input": window, "state": state, **extra})
    return {"input": windows[2], "state": state.astype(np.float32), **extra}


def silero_seq_inputs(rng, session) -> dict[str, np.ndarray]:
    windows = np.concatenate(silero_chunks(rng, 4), axis=0)  # [4, 576]
    h = rng.uniform(-0.3, 0.3, (1, 1, 128)).astype(np.float32)
    c = rng.uniform(-0.3, 0.3, (1, 1, 128)).astype(np.float32)
    return {"input": windows, "h": h, "c": c}


PPOCR_NORM = ([127.5] * 3, [127.5] * 3)  # (x / 255 - 0.5) / 0.5, range [-1, 1]
IMAGENET_NORM = ([0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255])

# stem -> (description of the inputs, recipe(rng, session) -> {input name: array})
RECIPES = {
    "ppocr-rec": ("2 text lines 3x48x320, (x/255-0.5)/0.5",
                  lambda rng, s: {"x": to_nchw(text_line_images(rng, 2, 48, 320), *PPOCR_NORM)}),
    "ppocr-cls": ("2 text lines 3x48x192, (x/255-0.5)/0.5",
                  lambda rng, s: {"x": to_nchw(text_line_images(rng, 2, 48, 192), *PPOCR_NORM)}),
    "ppocr-det": ("1 image 3x320x320, ImageNet mean/std",
                  lambda rng, s: {"x": to_nchw(text_line_images(rng, 1, 320, 320),
                                               *IMAGENET_NORM)}),
    "efficientnet-lite0": ("1 image 3x224x224, (x-127)/128",
                           lambda rng, s: {"input": to_nchw(photo_like_images(rng, 1, 224, 224),
                                                            [127] * 3, [128] * 3)}),
    "minilm-l6": ("token ids batch 2 x 16", lambda rng, s: bert_tokens(rng)),
    "minilm-l6-int8": ("token ids batch 2 x 16", lambda rng, s: bert_tokens(rng)),
    "silero-vad-16k": ("1 x 576 samples at 16 kHz + carried state", silero_16k_inputs),
    "silero-vad": ("1 x 576 samples at 16 kHz + carried state + sr", silero_16k_inputs),
    "silero-vad-16k-seq": ("4 x 576 samples at 16 kHz + h, c", silero_seq_inputs),
}


# Models fed the very same inputs as another, so that their outputs can be compared directly.
SAME_INPUTS_AS = {"minilm-l6-int8": "minilm-l6", "silero-vad": "silero-vad-16k"}


def seed_for(stem: str) -> list[int]:
    """The numpy seed sequence of a model's inputs: [SEED, crc32 of the recipe key]."""
    return [SEED, zlib.crc32(SAME_INPUTS_AS.get(stem, stem).encode())]


# ---------------------------------------------------------------------------------------------
# Writing the reference folders
# ---------------------------------------------------------------------------------------------

def file_name(prefix: str, tensor_name: str) -> str:
    return f"{prefix}.{re.sub(r'[^A-Za-z0-9._-]', '_', tensor_name)}.bin"


def tensor_bytes(array: np.ndarray) -> bytes:
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def describe(prefix: str, name: str, array: np.ndarray, used: set[str]) -> dict:
    if array.dtype not in KSERVE:
        raise SystemExit(f"error: tensor {name} has dtype {array.dtype}, which has no KServe name")
    fname = file_name(prefix, name)
    stem, n = fname[:-4], 1
    while fname in used:  # two names that sanitise alike
        n += 1
        fname = f"{stem}.{n}.bin"
    used.add(fname)
    return {"name": name, "datatype": KSERVE[array.dtype], "shape": list(array.shape),
            "file": fname}


def to_json(value) -> str:
    """Indented JSON with lists of numbers (shapes, seeds) kept on one line."""
    text = json.dumps(value, indent=2)
    return re.sub(r"\[[-\d,\s]*\]",
                  lambda m: json.dumps(json.loads(m.group(0))), text) + "\n"


def make_session(path: pathlib.Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # no warnings about unused initializers
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def up_to_date(ref_dir: pathlib.Path, sha256: str) -> bool:
    try:
        manifest = json.loads((ref_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if (manifest.get("model_sha256") != sha256 or manifest.get("onnxruntime") != ort.__version__
            or manifest.get("recipe_version") != RECIPE_VERSION):
        return False
    return all((ref_dir / t["file"]).is_file()
               for t in manifest.get("inputs", []) + manifest.get("outputs", []))


def write_reference(cache: pathlib.Path, model, session, feeds, outputs) -> pathlib.Path:
    stem = model.name.removesuffix(".onnx")
    ref_dir = cache / f"{stem}.ref"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{stem}.ref.", dir=cache))
    try:
        used: set[str] = set()
        manifest = {
            "model": model.name,
            "model_sha256": model.sha256,
            "onnxruntime": ort.__version__,
            "execution": "CPUExecutionProvider, intra_op_num_threads=1",
            "generator": "scripts/reference-outputs.py",
            "recipe_version": RECIPE_VERSION,
            "seed": seed_for(stem),
            "input_recipe": RECIPES[stem][0],
            "inputs": [],
            "outputs": [],
        }
        for meta in session.get_inputs():
            entry = describe("in", meta.name, feeds[meta.name], used)
            (tmp / entry["file"]).write_bytes(tensor_bytes(feeds[meta.name]))
            manifest["inputs"].append(entry)
        for meta, array in zip(session.get_outputs(), outputs):
            array = np.asarray(array)
            entry = describe("out", meta.name, array, used)
            (tmp / entry["file"]).write_bytes(tensor_bytes(array))
            manifest["outputs"].append(entry)
        (tmp / "manifest.json").write_text(to_json(manifest))
        os.chmod(tmp, 0o755)
        old = None
        if ref_dir.exists():
            old = cache / f".{stem}.ref.old.{os.getpid()}"
            os.replace(ref_dir, old)
        os.replace(tmp, ref_dir)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return ref_dir


def bench(session, feeds, warmup: int, runs: int) -> dict:
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times),
            "max_ms": max(times), "runs": runs, "warmup": warmup}


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Write onnxruntime reference inputs/outputs for the cached models.",
        epilog="Environment: CLOAK_MODEL_CACHE (cache folder).",
    )
    parser.add_argument("--cache", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("CLOAK_MODEL_CACHE",
                                                            REPO / ".cache" / "models")),
                        help="cache folder (default: $CLOAK_MODEL_CACHE or <repo>/.cache/models)")
    parser.add_argument("--models", help="comma-separated stable names (default: all cached)")
    parser.add_argument("--force", action="store_true", help="rewrite up-to-date folders")
    parser.add_argument("--bench", action="store_true",
                        help="also time each model and write <cache>/ort-timings.json")
    parser.add_argument("--runs", type=int, default=20, help="timed runs for --bench (20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs for --bench (3)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)

    registry = load_registry()
    cache = args.cache.resolve()
    known = {m.name.removesuffix(".onnx"): m for m in registry.MODELS}
    if args.models:
        wanted = [s.strip().removesuffix(".onnx") for s in args.models.split(",")]
        unknown = [w for w in wanted if w not in known]
        if unknown:
            parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    else:
        wanted = [stem for stem in known if (cache / known[stem].name).is_file()]
    if not wanted:
        print(f"no cached models in {cache}; run scripts/fetch-models.py first", file=sys.stderr)
        return 1

    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, {platform.machine()}; "
          f"cache {cache}")
    failures, timings = [], {}
    for stem in wanted:
        model = known[stem]
        path = cache / model.name
        if not path.is_file():
            print(f"{model.name}: MISSING (run scripts/fetch-models.py)", file=sys.stderr)
            failures.append(stem)
            continue
        actual = registry.sha256_file(path)
        if actual != model.sha256:
            print(f"{model.name}: sha256 {actual} is not the pinned {model.sha256}",
                  file=sys.stderr)
            failures.append(stem)
            continue
        if stem not in RECIPES:
            print(f"{model.name}: no input recipe; skipped")
            continue
        ref_dir = cache / f"{stem}.ref"
        fresh = not args.force and up_to_date(ref_dir, model.sha256)
        if fresh and not args.bench:
            print(f"{model.name}: {ref_dir.name}/ up to date")
            continue
        session = make_session(path)
        feeds = RECIPES[stem][1](np.random.default_rng(seed_for(stem)), session)
        if fresh:
            print(f"{model.name}: {ref_dir.name}/ up to date")
        else:
            outputs = session.run(None, feeds)
            bad = [m.name for m, a in zip(session.get_outputs(), outputs)
                   if np.issubdtype(np.asarray(a).dtype, np.floating)
                   and not np.all(np.isfinite(a))]
            if bad:
                print(f"{model.name}: output(s) {', '.join(bad)} not finite; nothing written",
                      file=sys.stderr)
                failures.append(stem)
                continue
            write_reference(cache, model, session, feeds, outputs)
            shapes = ", ".join(f"{m.name}{list(np.shape(a))}"
                               for m, a in zip(session.get_outputs(), outputs))
            print(f"{model.name}: wrote {ref_dir.name}/ -> {shapes}")
        if args.bench:
            timings[model.name] = bench(session, feeds, args.warmup, args.runs)
            t = timings[model.name]
            print(f"  {model.name}: onnxruntime, 1 thread: median {t['median_ms']:.3f} ms "
                  f"(min {t['min_ms']:.3f}, max {t['max_ms']:.3f}, {args.runs} runs)")
    if args.bench and timings:
        out = cache / "ort-timings.json"
        out.write_text(to_json({"onnxruntime": ort.__version__, "threads": 1,
                                "models": timings}))
        print(f"timings written to {out}")
    if failures:
        print(f"FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
