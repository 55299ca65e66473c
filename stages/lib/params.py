"""Load ``params.yaml`` and validate the block a stage reads, before any work.

Each block is a frozen dataclass; a field's metadata says what values are
allowed. Errors name the file, the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from stages.lib import StageError

PARAMS_FILE = Path("params.yaml")


class ParamsError(StageError, ValueError):
    """A missing, unknown or invalid parameter."""


def rule(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
         min_len: int | None = None, choices: tuple | None = None) -> Any:
    """A dataclass field with the bounds its value (or each list item) must satisfy."""
    return field(metadata={"ge": ge, "gt": gt, "le": le, "min_len": min_len, "choices": choices})


# --- the blocks ---------------------------------------------------------------

@dataclass(frozen=True)
class FetchParams:
    mirrors: tuple[str, ...] = rule(min_len=1)   # base URLs, tried in order
    timeout: float = rule(gt=0)                  # seconds per HTTP connect/read
    retries: int = rule(ge=0, le=10)             # per file and mirror, on transient errors


@dataclass(frozen=True)
class ComputeParams:
    portable: bool = rule()                      # the same bytes on any x86-64 CPU with AVX2 (stages/lib/compute.py)


@dataclass(frozen=True)
class DataParams:
    train_limit: int = rule(ge=1, le=60000)      # first N training images (tests use few)


@dataclass(frozen=True)
class TrainParams:
    latent_dim: int = rule(ge=1)
    hidden: tuple[int, ...] = rule(ge=1, min_len=1)  # encoder widths; decoder mirrors them
    epochs: int = rule(ge=1)
    batch_size: int = rule(ge=1)
    learning_rate: float = rule(gt=0)
    seed: int = rule(ge=0)


@dataclass(frozen=True)
class VAEParams(TrainParams):
    beta: float = rule(ge=0)                     # weight of the KL term; 1 is the ELBO


@dataclass(frozen=True)
class ClassifierParams:
    epochs: int = rule(ge=1)
    batch_size: int = rule(ge=1)
    learning_rate: float = rule(gt=0)
    seed: int = rule(ge=0)


@dataclass(frozen=True)
class EvaluateParams:
    n_samples: int = rule(ge=1, le=100000)       # decoded random latent points
    seed: int = rule(ge=0)
    threshold: float = rule(gt=0, le=1)          # top probability that makes a decode "recognisable"
    knn_k: int = rule(ge=1, le=100)


@dataclass(frozen=True)
class BetaSweepParams:
    betas: tuple[float, ...] = rule(ge=0, min_len=1)  # one VAE trained per beta (stages beta_vae@<beta>)


@dataclass(frozen=True)
class GridParams:
    """A uniform grid over the 2-D latent space, as in the notebook's generate_images_latent."""
    x: tuple[float, ...] = rule(min_len=2)       # [x0, x1]
    y: tuple[float, ...] = rule(min_len=2)       # [y0, y1]
    step: float = rule(gt=0)
    per_row: int = rule(ge=1, le=40)             # random decodes per row of the 10-row figure
    seed: int = rule(ge=0)                       # for those random latent points

    def __post_init__(self) -> None:
        for name in ("x", "y"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] >= lo_hi[1]:
                raise ParamsError(f"{name}: expected [low, high] with low < high, got {list(lo_hi)}")
            n = round((lo_hi[1] - lo_hi[0]) / self.step) + 1
            if n > 201:
                raise ParamsError(f"{name}: {n} grid points with step {self.step}; at most 201 allowed")


@dataclass(frozen=True)
class ConditionalGridParams(GridParams):
    """The conditional VAE decodes its grid for one digit."""
    digit: int = rule(ge=0, le=9)


@dataclass(frozen=True)
class ScatterParams:
    cmap: str = rule()
    point_size: float = rule(gt=0)


@dataclass(frozen=True)
class HistogramParams:
    bins: int = rule(ge=2, le=500)


@dataclass(frozen=True)
class SamplesParams:
    rows: int = rule(ge=1, le=20)
    cols: int = rule(ge=1, le=40)
    seed: int = rule(ge=0)


@dataclass(frozen=True)
class PlotParams:
    dpi: int = rule(ge=20, le=600)
    style: str = rule()
    scatter: ScatterParams = rule()
    histograms: HistogramParams = rule()
    samples: SamplesParams = rule()


@dataclass(frozen=True)
class ExploreParams:
    images: int = rule(ge=1, le=10000)           # test images the explorer page carries (random-image button)
    seed: int = rule(ge=0)                       # which ones
    steps: int = rule(ge=2, le=32)               # decodes in the interpolation strip


# --- validation ---------------------------------------------------------------

T = TypeVar("T")


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of blocks, got {type(data).__name__}")
    return data


def load(block: str, schema: type[T], path: str | Path = PARAMS_FILE) -> T:
    """Validate ``params.yaml``'s ``block`` (dots reach into nested blocks) against ``schema``."""
    data: Any = read_params(path)
    for part in block.split("."):
        if not isinstance(data, dict) or part not in data:
            raise ParamsError(f"{path}: missing block '{block}'")
        data = data[part]
    return parse(data, schema, block, path)


def parse(data: Any, schema: type[T], where: str, path: str | Path = PARAMS_FILE) -> T:
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: {where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(f"{path}: {where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(schema)
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name not in data:
            raise ParamsError(f"{path}: missing key {key} ({_describe(hints[name], f.metadata)})")
        values[name] = _check(data[name], hints[name], f.metadata, key, path)
    try:
        return schema(**values)
    except ParamsError as exc:  # a check across fields (__post_init__): say where
        raise ParamsError(f"{path}: {where}.{exc}") from None


def _check(value: Any, hint: Any, meta: dict, key: str, path: str | Path) -> Any:
    if dataclasses.is_dataclass(hint):
        return parse(value, hint, key, path)
    if typing.get_origin(hint) is tuple:
        item_hint = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ParamsError(f"{path}: {key}: expected {_describe(hint, meta)}, got {value!r}")
        if meta.get("min_len") is not None and len(value) < meta["min_len"]:
            raise ParamsError(f"{path}: {key}: expected at least {meta['min_len']} item(s), got {value!r}")
        return tuple(_check(v, item_hint, meta, f"{key}[{i}]", path) for i, v in enumerate(value))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str) and value != "",
    }[hint]
    if ok and hint is float:
        value = float(value)
    if not ok or not _in_bounds(value, meta):
        raise ParamsError(f"{path}: {key}: expected {_describe(hint, meta)}, got {value!r}")
    return value


def _in_bounds(value: Any, meta: dict) -> bool:
    if meta.get("choices") is not None:
        return value in meta["choices"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return ((meta.get("ge") is None or value >= meta["ge"])
            and (meta.get("gt") is None or value > meta["gt"])
            and (meta.get("le") is None or value <= meta["le"]))


def _describe(hint: Any, meta: dict) -> str:
    if dataclasses.is_dataclass(hint):
        return f"a mapping with keys {[f.name for f in dataclasses.fields(hint)]}"
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0], meta)}"
    if meta.get("choices") is not None:
        return f"one of {list(meta['choices'])}"
    text = {bool: "true or false", int: "an integer", float: "a number", str: "a non-empty string"}[hint]
    bounds = [f"{op} {meta[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<=")) if meta.get(k) is not None]
    return text + (" " + " and ".join(bounds) if bounds else "")


# Every block of params.yaml and its schema (the test suite validates them all).
BLOCKS: dict[str, type] = {
    "compute": ComputeParams,
    "fetch": FetchParams,
    "data": DataParams,
    "ae": TrainParams,
    "vae": VAEParams,
    "classifier": ClassifierParams,
    "evaluate": EvaluateParams,
    "plot": PlotParams,
    "generate.ae": GridParams,
    "generate.vae": GridParams,
    "cvae": VAEParams,
    "beta_sweep": BetaSweepParams,
    "generate.cvae": ConditionalGridParams,
    "explore": ExploreParams,
}
