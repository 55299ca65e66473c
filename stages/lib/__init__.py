"""What every stage needs: StageError and run(). Everything else lives in the module that holds it,
so that editing it reruns only the stages that import it (DVC hashes each stage's code files)."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

MODELS = ("ae", "vae", "cvae")  # the argument of the per-model stages (train@, encode@, ...)


class StageError(Exception):
    """An expected failure (bad params, bad input, diverged training); the message says what to fix."""


def run(main: Callable[..., None], compute: bool = True, choices: Sequence[str] | None = None) -> None:
    """Run a stage's main(); report a StageError as one clear line and a non-zero exit, no traceback.

    ``compute``: the stage computes with numpy or TensorFlow, so it first applies
    ``compute.portable`` from params.yaml (stages/lib/compute.py), which may run it again in a child process.
    ``choices``: the stage takes one command-line argument, one of these (``MODELS`` for the
    per-model stages), and main receives it.
    """
    try:
        args = sys.argv[1:] if choices is not None else []
        if choices is not None and (len(args) != 1 or args[0] not in choices):
            raise StageError(f"expected one argument, one of {list(choices)}; got {args}")
        if compute:
            from stages.lib import compute as compute_setup, params
            c = params.load("compute", params.ComputeParams)
            compute_setup.apply(c.portable, c.threads)
        main(*args)
    except StageError as exc:
        sys.exit(f"error: {exc}")
