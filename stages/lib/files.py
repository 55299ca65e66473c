"""Atomic, byte-reproducible file writing (JSON, NPZ/NPY, TSV).

Every artifact is written to a temporary file in the destination folder and
then renamed, so a crash or a bad input never leaves a partial artifact, and
every format is written without timestamps so two runs give identical bytes.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from stages.lib import StageError

# The earliest date a zip entry can carry; fixed so archives are reproducible.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class NonFiniteError(StageError, ValueError):
    """A NaN or infinite number was to be written to JSON; the message names the file and the key."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``folder``; on success move every file written into it
    to ``folder`` (created if need be), replacing files of the same name.

    For a stage's outputs that belong together: on any exception nothing in ``folder`` changes,
    so it never holds a mix of new and old files. The staging folder is removed either way.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        yield staging
        folder.mkdir(exist_ok=True)
        for f in sorted(staging.iterdir()):
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _jsonable(value: Any, name: str, key: str = "") -> Any:
    """Plain Python values for JSON; numpy scalars become int/float. ``key``: where ``value`` sits."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, name, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, name, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), name, key)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            raise NonFiniteError(f"{name}: refusing to write a non-finite number to JSON: "
                                 f"{key or '(top level)'} = {value}")
        return value
    return value


def json_text(obj: Mapping[str, Any], digits: int | None = 4, name: str | os.PathLike = "JSON") -> str:
    """What write_json writes; a NaN or infinity raises NonFiniteError naming ``name`` and the key."""
    return json.dumps(_round(_jsonable(obj, str(name)), digits), sort_keys=True, indent=2) + "\n"


def write_json(path: str | os.PathLike, obj: Mapping[str, Any], digits: int | None = 4) -> None:
    """Sorted keys, floats rounded to ``digits`` decimals, a trailing newline: stable bytes, clean diffs.

    Refuses NaN and infinities (NonFiniteError, a StageError naming the file and the key) before
    touching ``path``."""
    write_text(path, json_text(obj, digits, path))


def _round(value: Any, digits: int | None) -> Any:
    if digits is None:
        return value
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return round(value, digits) if isinstance(value, float) else value


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but reproducible (numpy stamps entries with the time)."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(arrays[key]), allow_pickle=False)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read the named arrays, never unpickling; a missing key names the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (run the stage that writes it: dvc repro)")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}; it holds {sorted(data.files)}")
        return {k: data[k] for k in keys}


def tsv_text(columns: Mapping[str, Sequence[float]]) -> str:
    """A table with one row per index; floats with fixed precision for stable diffs."""
    names = list(columns)
    n = len(next(iter(columns.values()))) if names else 0
    lines = ["\t".join(names)]
    for i in range(n):
        lines.append("\t".join(_fmt(columns[name][i]) for name in names))
    return "\n".join(lines) + "\n"


def write_tsv(path: str | os.PathLike, columns: Mapping[str, Sequence[float]]) -> None:
    write_text(path, tsv_text(columns))


def _fmt(value: float) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.6g}"
