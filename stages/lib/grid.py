"""The uniform latent grid that generate@<model> decodes and plot@<model> labels."""
from __future__ import annotations

import numpy as np


def latent_grid(x0: float, x1: float, y0: float, y1: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates as in the notebook: x ascending, y descending (the highest y at the top)."""
    nx = round((x1 - x0) / step) + 1
    ny = round((y1 - y0) / step) + 1
    return np.linspace(x0, x1, nx), np.linspace(y1, y0, ny)
