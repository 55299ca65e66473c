"""Code shared by the stages: params, files, MNIST, models, training, plotting."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


class StageError(Exception):
    """An expected failure (bad params, bad input, diverged training); the message says what to fix."""


def run(main: Callable[[], None], compute: bool = True) -> None:
    """Run a stage's main(); report a StageError as one clear line and a non-zero exit, no traceback.

    ``compute``: the stage computes with numpy or TensorFlow, so it first applies
    ``compute.portable`` from params.yaml (stages/lib/compute.py), which may re-execute it.
    """
    try:
        if compute:
            from stages.lib import compute as compute_setup, params
            compute_setup.apply(params.load("compute", params.ComputeParams).portable)
        main()
    except StageError as exc:
        sys.exit(f"error: {exc}")


MODELS = ("ae", "vae", "cvae")

# The beta sweep's models (stage beta_sweep), read by the likelihood and explore stages:
# SWEEP_MODELS / sweep_name(beta) / {encoder,decoder}.keras.
SWEEP_MODELS = Path("artifacts/beta_sweep/models")


def sweep_name(beta: float) -> str:
    """beta_0.5, beta_2, beta_8: one beta of the sweep, in folder names and metrics keys."""
    return f"beta_{beta:g}"


def sweep_beta(name: str) -> float:
    """The beta of a sweep_name."""
    return float(name.removeprefix("beta_"))


def model_arg(argv: list[str] | None = None) -> str:
    """The model a per-model stage works on: its one command-line argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in MODELS:
        raise StageError(f"expected one argument, the model, one of {list(MODELS)}; got {args}")
    return args[0]
