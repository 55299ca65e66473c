"""Where the beta sweep keeps its models (stage beta_sweep), for the stages that read them
(likelihood@beta_sweep, plot_beta_sweep, explore): SWEEP_MODELS / sweep_name(beta) / {encoder,decoder}.keras."""
from __future__ import annotations

from pathlib import Path

SWEEP_MODELS = Path("artifacts/beta_sweep/models")


def sweep_name(beta: float) -> str:
    """beta_0.5, beta_2, beta_8: one beta of the sweep, in folder names and metrics keys."""
    return f"beta_{beta:g}"


def sweep_beta(name: str) -> float:
    """The beta of a sweep_name."""
    return float(name.removeprefix("beta_"))
