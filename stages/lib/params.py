"""Load ``params.yaml`` and validate the block a stage reads, before any work (and before TensorFlow).

Each block is a frozen pydantic model. Fields are strict where YAML could slip a wrong type
through lax coercion (``true`` or ``"3"`` for a number), numbers must be finite, and a YAML list
fills a tuple. Errors name the file, the dotted key, the value and what is allowed, one line each.
"""
from __future__ import annotations

import difflib
import functools
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt,
                      StrictStr, ValidationError, ValidationInfo, create_model, field_validator, model_validator)
from pydantic.fields import FieldInfo
from ruamel.yaml import YAML, YAMLError

from stages.lib import StageError

PARAMS_FILE = Path("params.yaml")


class ParamsError(StageError, ValueError):
    """A missing, unknown or invalid parameter."""


class Block(BaseModel):
    # allow_inf_nan=False applies to every float, tuple items included.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _matplotlib_style(name: str) -> str:
    from matplotlib import style  # lazy: only the plot stages pay for it

    allowed = ["default", *sorted(set(style.available) | {"classic"})]
    if name not in allowed:
        raise ValueError(f"expected a matplotlib style, one of {allowed}, got {name!r}")
    return name


def _matplotlib_colormap(name: str) -> str:
    from matplotlib import colormaps  # lazy, as above

    if name not in colormaps:
        close = difflib.get_close_matches(name, list(colormaps), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else " (see matplotlib.colormaps)"
        raise ValueError(f"expected a matplotlib colormap, got {name!r}{hint}")
    return name


Text = Annotated[StrictStr, Field(min_length=1)]
Style = Annotated[Text, AfterValidator(_matplotlib_style)]
Colormap = Annotated[Text, AfterValidator(_matplotlib_colormap)]


# --- the blocks ---------------------------------------------------------------

class FetchParams(Block):
    mirrors: tuple[Text, ...] = Field(min_length=1)   # base URLs, tried in order
    timeout: StrictFloat = Field(gt=0)                # seconds per HTTP connect/read
    retries: StrictInt = Field(ge=0, le=10)           # per file and mirror, on transient errors


class ComputeParams(Block):
    portable: StrictBool                              # the same bytes on any x86-64 CPU with AVX2 (stages/lib/compute.py)
    threads: StrictInt = Field(ge=1, le=8)            # AE/VAE/CVAE train steps: the batch in this many parts at once


class DataParams(Block):
    train_limit: StrictInt = Field(ge=1, le=60000)    # first N training images (tests use few)
    binarize: Literal["none", "dynamic"]              # dynamic: Bernoulli(x) pixels, as in the literature


class TrainParams(Block):
    latent_dim: StrictInt = Field(ge=1)
    hidden: tuple[Annotated[StrictInt, Field(ge=1)], ...] = Field(min_length=1)  # encoder widths; decoder mirrors them
    epochs: StrictInt = Field(ge=1)
    batch_size: StrictInt = Field(ge=1)
    learning_rate: StrictFloat = Field(gt=0)
    seed: StrictInt = Field(ge=0)


def _protocol_problem(epochs: int, kl_warmup_epochs: int, validation: int, patience: int) -> str | None:
    """What is wrong with a training protocol's warm-up, split and early stopping together, if anything."""
    if kl_warmup_epochs > epochs:
        return (f"kl_warmup_epochs ({kl_warmup_epochs}) exceeds epochs ({epochs}): the KL weight would never "
                "reach beta")
    if patience and not validation:
        return (f"patience ({patience}) needs validation > 0: early stopping watches the validation split's "
                "-ELBO, never the test set")
    return None


class VAEParams(TrainParams):
    beta: StrictFloat = Field(ge=0)                   # weight of the KL term; 1 is the ELBO
    kl_warmup_epochs: StrictInt = Field(ge=0)         # KL weight beta * min(1, e / W) at epoch e; 0: beta throughout
    validation: StrictInt = Field(ge=0, le=59999)     # training images held out for early stopping; 0: none
    validation_seed: StrictInt = Field(ge=0)          # which ones
    patience: StrictInt = Field(ge=0)                 # epochs without a better validation -ELBO before stopping; 0: off

    @model_validator(mode="after")
    def _protocol(self) -> "VAEParams":
        problem = _protocol_problem(self.epochs, self.kl_warmup_epochs, self.validation, self.patience)
        if problem:
            raise ValueError(problem)
        return self


def check_protocol(block: str, p: Any, train_limit: int, path: str | Path = PARAMS_FILE) -> None:
    """A VAE protocol's checks that need more than its block: the validation split must leave
    training images (``validation`` < data.train_limit); and, for a stage that loaded only some keys
    (keys=, which skips the schema's own check), warm-up, split and early stopping must fit together."""
    problem = _protocol_problem(p.epochs, p.kl_warmup_epochs, p.validation, p.patience)
    if problem:
        raise ParamsError(f"{path}: {block}: {problem}")
    if p.validation >= train_limit:
        raise ParamsError(f"{path}: {block}.validation ({p.validation}) must be below data.train_limit "
                          f"({train_limit}): the split would leave no images to train on")


class ClassifierParams(Block):
    epochs: StrictInt = Field(ge=1)
    batch_size: StrictInt = Field(ge=1)
    learning_rate: StrictFloat = Field(gt=0)
    seed: StrictInt = Field(ge=0)


class EvaluateParams(Block):
    n_samples: StrictInt = Field(ge=1, le=100000)     # decoded random latent points
    seed: StrictInt = Field(ge=0)
    threshold: StrictFloat = Field(gt=0, le=1)        # top probability that makes a decode "recognisable"
    knn_k: StrictInt = Field(ge=1, le=100)


class BetaSweepParams(Block):
    betas: tuple[Annotated[StrictFloat, Field(ge=0)], ...] = Field(min_length=1)  # one VAE per beta


class GridParams(Block):
    """A uniform grid over the 2-D latent space, as in the notebook's generate_images_latent."""
    step: StrictFloat = Field(gt=0)                   # declared before x and y so their check can see it
    x: tuple[StrictFloat, ...]                        # [x0, x1]
    y: tuple[StrictFloat, ...]                        # [y0, y1]
    per_row: StrictInt = Field(ge=1, le=40)           # random decodes per row of the 10-row figure
    seed: StrictInt = Field(ge=0)                     # for those random latent points

    @field_validator("x", "y")
    @classmethod
    def _range(cls, lo_hi: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        if len(lo_hi) != 2 or lo_hi[0] >= lo_hi[1]:
            raise ValueError(f"expected [low, high] with low < high, got {list(lo_hi)}")
        step = info.data.get("step")  # absent when step itself is invalid (reported on its own)
        if step is not None:
            span = (lo_hi[1] - lo_hi[0]) / step
            n = round(span) + 1 if math.isfinite(span) else math.inf
            if n > 201:
                raise ValueError(f"{n} grid points with step {step}; at most 201 allowed")
        return lo_hi


class ConditionalGridParams(GridParams):
    """The conditional VAE decodes its grid for one digit."""
    digit: StrictInt = Field(ge=0, le=9)


class ScatterParams(Block):
    cmap: Colormap
    point_size: StrictFloat = Field(gt=0)


class HistogramParams(Block):
    bins: StrictInt = Field(ge=2, le=500)


class SamplesParams(Block):
    rows: StrictInt = Field(ge=1, le=20)
    cols: StrictInt = Field(ge=1, le=40)
    seed: StrictInt = Field(ge=0)


class PlotParams(Block):
    dpi: StrictInt = Field(ge=20, le=600)
    style: Style
    scatter: ScatterParams
    histograms: HistogramParams
    samples: SamplesParams


class LikelihoodGridParams(Block):
    """The quadrature grid [-bound, bound]^2 of the 2-D latent space (stages likelihood@<item>)."""
    bound: StrictFloat = Field(gt=0)                  # covers the prior N(0, I): 6 leaves out e^-18
    points: StrictInt = Field(ge=3, le=1001)          # per axis; the check refines to 2 * points - 1
    tolerance: StrictFloat = Field(gt=0)              # nats: the two grids must agree within this


class LikelihoodParams(Block):
    seed: StrictInt = Field(ge=0)                     # the subset of images and every z sample
    images: StrictInt = Field(ge=1, le=10000)         # test images for the IWAE and the quadrature
    iwae_k: tuple[Annotated[StrictInt, Field(ge=1, le=10000)], ...] = Field(min_length=1)  # samples per bound
    grid: LikelihoodGridParams


class PaperTrainParams(Block):
    """The protocol of Davidson et al. 2018 (docs/paper.md), shared by every architecture in paper.models."""
    epochs: StrictInt = Field(ge=1)                   # at most; early stopping ends most runs sooner
    batch_size: StrictInt = Field(ge=1)
    learning_rate: StrictFloat = Field(gt=0)
    beta: StrictFloat = Field(ge=0)
    kl_warmup_epochs: StrictInt = Field(ge=0)
    validation: StrictInt = Field(ge=0, le=59999)
    validation_seed: StrictInt = Field(ge=0)
    patience: StrictInt = Field(ge=0)
    binarize: Literal["none", "dynamic"]              # the paper's MNIST is dynamically binarized

    @model_validator(mode="after")
    def _protocol(self) -> "PaperTrainParams":
        problem = _protocol_problem(self.epochs, self.kl_warmup_epochs, self.validation, self.patience)
        if problem:
            raise ValueError(problem)
        return self


class PaperModelParams(Block):
    """One architecture trained under the paper's protocol: the encoder's widths (the decoder mirrors them),
    and how the encoder predicts q(z|x)'s spread (models.build_encoder: log_var, the notebook's, or
    softplus, Davidson et al.'s example's sigma = softplus(h))."""
    latent_dim: StrictInt = Field(ge=1)
    hidden: tuple[Annotated[StrictInt, Field(ge=1)], ...] = Field(min_length=1)
    scale: Literal["log_var", "softplus"]


class PaperParams(Block):
    """The whole paper block; the stages read its parts (paper.train, paper.models.<m>, paper.likelihood)."""
    train: PaperTrainParams
    models: dict[Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]*$")], PaperModelParams] = Field(min_length=1)
    seeds: tuple[Annotated[StrictInt, Field(ge=0)], ...] = Field(min_length=1)  # one stage per model and seed
    likelihood: LikelihoodParams

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"expected distinct seeds, got {list(seeds)}")
        return seeds


class ExploreParams(Block):
    images: StrictInt = Field(ge=1, le=10000)         # test images the explorer page carries (random-image button)
    seed: StrictInt = Field(ge=0)                     # which ones
    steps: StrictInt = Field(ge=2, le=32)             # decodes in the interpolation strip


class EvolutionParams(Block):
    images: StrictInt = Field(ge=100, le=10000)       # test images encoded at every epoch (evolution@<model>)
    seed: StrictInt = Field(ge=0)                     # which ones: the same for every model


class AnimateParams(Block):
    frame_ms: StrictInt = Field(ge=20, le=5000)       # how long each epoch's frame shows
    last_frame_ms: StrictInt = Field(ge=20, le=20000) # the last epoch's, before the loop starts over
    point_size: StrictFloat = Field(gt=0)             # marker area, points^2


# --- loading ------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as DVC reads it: YAML 1.2 (``1e-3`` is a number), safe loader, plain containers."""
    path = Path(path)
    try:
        data = YAML(typ="safe").load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root)") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ParamsError(f"{path}: not valid YAML: {getattr(exc, 'problem', None) or exc}{where}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of blocks, got {type(data).__name__}")
    return data


def load(block: str, schema: type[M], path: str | Path = PARAMS_FILE, *, keys: tuple[str, ...] | None = None) -> M:
    """Validate ``params.yaml``'s ``block`` (dots reach into nested blocks) against ``schema``.

    ``keys``: only these keys of the block, for a stage that reads (and declares in dvc.yaml) only
    them; the others are neither required nor checked, so a bad value there fails only the stages
    that read it, which are the ones an edit of it reruns. The result has just these attributes.
    """
    data: Any = read_params(path)
    for part in block.split("."):
        if not isinstance(data, dict) or part not in data:
            raise ParamsError(f"{path}: missing block '{block}'")
        data = data[part]
    if keys is not None:
        schema = _subset(schema, tuple(keys))
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k in keys}
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ParamsError("\n".join(f"{path}: {line}" for line in _messages(exc, schema, block))) from None


@functools.cache
def _subset(schema: type[M], keys: tuple[str, ...]) -> type[M]:
    """``schema`` with only ``keys``, each field as declared there (type, bounds, strictness)."""
    unknown = [k for k in keys if k not in schema.model_fields]
    if unknown:
        raise ValueError(f"{schema.__name__} has no field(s) {unknown}")
    fields: dict[str, Any] = {k: (schema.model_fields[k].annotation, schema.model_fields[k]) for k in keys}
    return create_model(f"{schema.__name__}[{', '.join(keys)}]", __base__=Block, **fields)


# --- error messages -----------------------------------------------------------

def _messages(exc: ValidationError, schema: type[BaseModel], where: str) -> list[str]:
    """One line per problem, from pydantic's errors, in the words of params.yaml (no doc URLs)."""
    errors = exc.errors(include_url=False)
    lines, unknown = [], {}
    for err in errors:
        loc = err["loc"]
        if err["type"] == "extra_forbidden":  # gathered below: one line per mapping
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        if err["type"] == "too_short" and any(e["loc"][:len(loc)] == loc and len(e["loc"]) > len(loc) for e in errors):
            continue  # pydantic also says "too short" when items were invalid; their errors say why
        key = _key(where, loc)
        hint, meta = _resolve(schema, loc)
        if err["type"] == "missing":
            lines.append(f"missing key {key} ({_describe(hint, meta)})")
        elif err["type"] in ("value_error", "assertion_error"):  # our own checks say what they expect
            lines.append(f"{key}: {err['ctx']['error']}")
        elif err["type"] == "too_short":
            lines.append(f"{key}: expected at least {err['ctx']['min_length']} item(s), got {err['input']!r}")
        elif hint is None:  # not expected; pydantic's own words then
            lines.append(f"{key}: {err['msg']}, got {err['input']!r}")
        else:
            expected = _describe(hint, meta, finite=err["type"] == "finite_number")
            lines.append(f"{key}: expected {expected}, got {err['input']!r}")
    for loc, names in unknown.items():
        hint, _ = _resolve(schema, loc)
        allowed = sorted(hint.model_fields) if _is_model(hint) else []
        lines.append(f"{_key(where, loc)}: unknown key(s) {sorted(names)}; allowed: {allowed}")
    return lines


def _key(where: str, loc: tuple[int | str, ...]) -> str:
    """``ae`` + ("hidden", 1) -> ``ae.hidden[1]``."""
    return where + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _is_model(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, BaseModel)


def _unwrap(hint: Any, meta: list) -> tuple[Any, list]:
    """Annotated[int, Strict(), FieldInfo(ge=1)] -> int, with the constraints flattened into ``meta``."""
    while typing.get_origin(hint) is Annotated:
        hint, *extra = typing.get_args(hint)
        for m in extra:
            meta = [*meta, *(m.metadata if isinstance(m, FieldInfo) else [m])]
    return hint, meta


def _resolve(schema: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[Any, list]:
    """The type and constraints at ``loc`` in ``schema`` (None if pydantic points elsewhere)."""
    hint, meta = schema, []
    for part in loc:
        if isinstance(part, str) and _is_model(hint) and part in hint.model_fields:
            info = hint.model_fields[part]
            hint, meta = _unwrap(info.annotation, list(info.metadata))
        elif isinstance(part, int) and typing.get_origin(hint) is tuple:
            hint, meta = _unwrap(typing.get_args(hint)[0], [])
        else:
            return None, []
    return hint, meta


def _describe(hint: Any, meta: list, finite: bool = False) -> str:
    """What a value must be, in words: 'an integer >= 1', 'a list of a number >= 0', ..."""
    if _is_model(hint):
        return f"a mapping with keys {list(hint.model_fields)}"
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(*_unwrap(typing.get_args(hint)[0], []), finite)}"
    if typing.get_origin(hint) is Literal:
        return f"one of {list(typing.get_args(hint))}"
    text = {bool: "true or false", int: "an integer", float: "a finite number" if finite else "a number",
            str: "a non-empty string"}.get(hint, str(hint))
    bounds = [f"{op} {getattr(m, name)}" for m in meta for name, op in (("ge", ">="), ("gt", ">"), ("le", "<="))
              if hasattr(m, name)]
    return " ".join([text, " and ".join(bounds)]) if bounds else text


# Every block of params.yaml and its schema (the test suite validates them all).
BLOCKS: dict[str, type[BaseModel]] = {
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
    "likelihood": LikelihoodParams,
    "explore": ExploreParams,
    "paper": PaperParams,
    "evolution": EvolutionParams,
    "animate": AnimateParams,
}
