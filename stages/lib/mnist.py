"""MNIST: the four original IDX files, where to get them, how to verify and load them.

Sources are tried in order: ``MNIST_MIRROR`` (a local folder or a base URL),
then the public mirrors from params. Each file is accepted only when the
sha256 of its *decompressed* content matches the published checksum, so a
mirror's gzip settings do not matter and the output never depends on where
the files came from.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from stages.lib import StageError
from stages.lib.files import atomic_path, load_npz

ENV_MIRROR = "MNIST_MIRROR"

# file name -> (array name, sha256 of the decompressed IDX content, expected shape)
FILES: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "train-images-idx3-ubyte.gz": (
        "x_train", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", (60000, 28, 28)),
    "train-labels-idx1-ubyte.gz": (
        "y_train", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", (60000,)),
    "t10k-images-idx3-ubyte.gz": (
        "x_test", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", (10000, 28, 28)),
    "t10k-labels-idx1-ubyte.gz": (
        "y_test", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", (10000,)),
}
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class MnistError(StageError):
    """MNIST could not be obtained, verified or read."""


class SourceFailed(Exception):
    """One source could not deliver one verified file; the message says why."""


# --- IDX format ---------------------------------------------------------------

def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse an uncompressed IDX file of unsigned bytes (the only type MNIST uses)."""
    if len(data) < 4:
        raise MnistError(f"{name}: {len(data)} bytes, too short for an IDX header")
    zero, dtype, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
        raise MnistError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()} "
            "(expected 0x00000801 for labels or 0x00000803 for images)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistError(f"{name}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise MnistError(
            f"{name}: IDX header says shape {shape} ({expected} bytes in all), "
            f"but the file has {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def verified_content(gz_bytes: bytes, name: str) -> bytes:
    """Decompress and check the sha256 of the content; raise SourceFailed if wrong."""
    expected = FILES[name][1]
    try:
        content = gzip.decompress(gz_bytes)
    except (EOFError, OSError, zlib.error) as exc:
        raise SourceFailed(f"not a complete gzip file ({exc}); expected content sha256 {expected}") from None
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise SourceFailed(f"checksum mismatch: expected sha256 {expected}, got {actual}")
    return content


# --- sources ------------------------------------------------------------------

def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def sources(mirrors: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
    """``MNIST_MIRROR`` first (when set), then the params' mirrors."""
    env = os.environ if env is None else env
    first = env.get(ENV_MIRROR, "").strip()
    return ([first] if first else []) + list(mirrors)


@dataclass
class Downloader:
    """Fetches one file from one source into the download cache, verified."""
    cache_dir: Path
    timeout: float
    retries: int

    def content(self, source: str, name: str) -> bytes:
        if not is_url(source):
            path = Path(source.removeprefix("file://")) / name
            try:
                return verified_content(path.read_bytes(), name)
            except OSError as exc:
                raise SourceFailed(f"cannot read {path}: {exc.strerror or exc}") from None
        cached = self.cache_dir / name
        if cached.exists():
            try:
                return verified_content(cached.read_bytes(), name)
            except SourceFailed:
                cached.unlink()  # stale or damaged: download again
        url = source.rstrip("/") + "/" + name
        with atomic_path(cached) as tmp:
            self._download(url, tmp)
            content = verified_content(tmp.read_bytes(), name)
        return content

    def _download(self, url: str, dest: Path) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from tqdm import tqdm
        from urllib3.util.retry import Retry

        retry = Retry(total=self.retries, backoff_factor=0.5, allowed_methods=["GET"],
                      status_forcelist=[429, 500, 502, 503, 504], raise_on_status=False)
        with requests.Session() as session:
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
            try:
                with session.get(url, stream=True, timeout=self.timeout) as resp:
                    if resp.status_code != 200:
                        raise SourceFailed(f"HTTP {resp.status_code} for {url}")
                    total = int(resp.headers.get("Content-Length", 0)) or None
                    with open(dest, "wb") as f, tqdm(
                            total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                            disable=not sys.stderr.isatty(), leave=False) as bar:
                        for chunk in resp.iter_content(chunk_size=1 << 16):
                            f.write(chunk)
                            bar.update(len(chunk))
            except requests.ConnectionError as exc:
                raise SourceFailed(f"unreachable: {url} ({_short(exc)})") from None
            except requests.RequestException as exc:
                raise SourceFailed(f"download failed: {url} ({_short(exc)})") from None


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."


def fetch(mirrors: Sequence[str], cache_dir: Path, timeout: float, retries: int,
          env: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Obtain and verify all four files; return the arrays, or raise one MnistError for all failures."""
    tried = sources(mirrors, env)
    downloader = Downloader(Path(cache_dir), timeout, retries)
    arrays: dict[str, np.ndarray] = {}
    failures: dict[str, list[str]] = {}
    for name, (key, _, shape) in FILES.items():
        for source in tried:
            try:
                content = downloader.content(source, name)
            except SourceFailed as exc:
                failures.setdefault(name, []).append(f"{source}: {exc}")
                continue
            array = parse_idx(content, name)
            if array.shape != shape:
                raise MnistError(f"{name}: shape {array.shape}, expected {shape}")
            arrays[key] = array
            break
    missing = [name for name, (key, _, _) in FILES.items() if key not in arrays]
    if missing:
        raise MnistError(_failure_message(missing, failures, env))
    return arrays


def _failure_message(missing: list[str], failures: dict[str, list[str]], env: dict[str, str] | None) -> str:
    env = os.environ if env is None else env
    lines = ["Could not obtain verified MNIST files from any source."]
    for name in missing:
        lines.append(f"  {name} (expected sha256 of decompressed content {FILES[name][1]}):")
        lines += [f"    - {reason}" for reason in failures[name]]
    offline = all("unreachable" in r or "cannot read" in r for n in missing for r in failures[n])
    hint = (f"Set {ENV_MIRROR} to a local folder holding the four original .gz files, or to a base URL "
            f"that serves them, e.g.  {ENV_MIRROR}=/abs/path/to/shared/mnist dvc repro")
    if offline and not env.get(ENV_MIRROR):
        lines.insert(1, f"No source was reachable (offline?) and {ENV_MIRROR} is not set.")
    lines.append(hint)
    return "\n".join(lines)


# --- the processed data set -----------------------------------------------------

BINARIZATIONS = ("none", "dynamic")
# Fixed draws for the images that are binarized once (data.binarize: dynamic): the test set,
# and the training set where a stage reads it outside training (encode).
TEST_BINARIZATION_SEED = 0
TRAIN_BINARIZATION_SEED = 1


def binarized(x: np.ndarray, seed: int) -> np.ndarray:
    """Each pixel drawn as Bernoulli(intensity): the binarized MNIST of the VAE literature."""
    return (np.random.default_rng(seed).random(x.shape, dtype=np.float32) < x).astype(np.float32)


def load(path: str | Path = "data/mnist.npz", train_limit: int | None = None, binarize: str = "none"
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: images as float32 in [0, 1], labels as int32.

    ``binarize="dynamic"``: the test images are binarized once (TEST_BINARIZATION_SEED); the
    training images stay intensities, which training draws anew each epoch
    (``training.dataset``).
    """
    if binarize not in BINARIZATIONS:
        raise MnistError(f"binarize: expected one of {list(BINARIZATIONS)}, got {binarize!r}")
    d = load_npz(path, ARRAYS)
    for key, _, shape in FILES.values():
        if d[key].shape != shape or d[key].dtype != np.uint8:
            raise MnistError(f"{path}: {key} has shape {d[key].shape} and dtype {d[key].dtype}, "
                             f"expected {shape} uint8 (rerun: dvc repro fetch)")
    n = len(d["x_train"]) if train_limit is None else train_limit
    x_test = d["x_test"].astype(np.float32) / 255
    if binarize == "dynamic":
        x_test = binarized(x_test, TEST_BINARIZATION_SEED)
    return (d["x_train"][:n].astype(np.float32) / 255, d["y_train"][:n].astype(np.int32),
            x_test, d["y_test"].astype(np.int32))
