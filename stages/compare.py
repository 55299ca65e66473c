"""Stage compare: the AE vs VAE (vs conditional VAE) table of metrics, as Markdown (artifacts/comparison.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.lib import run
from stages.lib.files import write_text

MODELS = {"ae": "AE", "vae": "VAE", "cvae": "CVAE"}
# (row label, file, dotted key, format, what it says)
ROWS = [
    ("test reconstruction (nats/image)", "metrics.json", "test_reconstruction", ".1f", "lower is better"),
    ("test KL (nats/image)", "metrics.json", "test_kl", ".2f", "VAEs only"),
    ("test negative ELBO (nats/image)", "metrics.json", "test_neg_elbo", ".1f", "lower is better"),
    ("grid: recognisable share", "evaluation.json", "grid.recognisable_share", ".3f",
     "decodes the classifier labels with p >= threshold"),
    ("grid: class balance", "evaluation.json", "grid.class_balance", ".3f", "1 = every digit equally often"),
    ("grid: mean confidence", "evaluation.json", "grid.mean_confidence", ".3f", ""),
    ("samples: recognisable share", "evaluation.json", "samples.recognisable_share", ".3f",
     "VAE: z ~ N(0, I); AE: uniform in its codes' box"),
    ("samples: class balance", "evaluation.json", "samples.class_balance", ".3f", ""),
    ("samples: mean confidence", "evaluation.json", "samples.mean_confidence", ".3f", ""),
    ("conditional accuracy", "evaluation.json", "conditional_accuracy", ".3f",
     "CVAE: generated digit = conditioning digit"),
    ("kNN accuracy of test codes", "evaluation.json", "knn_accuracy", ".3f", "how well codes separate digits"),
    ("per-digit std spread (CV)", "evaluation.json", "latent.std_spread", ".3f",
     "0 = all digits equally wide"),
    ("widest / narrowest digit std", "evaluation.json", "latent.std_ratio", ".2f", ""),
]


def lookup(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def table(models: dict[str, str], rows: list, root: Path = Path("artifacts")) -> str:
    files = {(m, f): json.loads((root / m / f).read_text()) for m in models for f in {r[1] for r in rows}}
    lines = ["| metric | " + " | ".join(models.values()) + " | note |",
             "| --- | " + " | ".join("---:" for _ in models) + " | --- |"]
    for label, file, key, fmt, note in rows:
        cells = [lookup(files[m, file], key) for m in models]
        lines.append(f"| {label} | " + " | ".join("–" if c is None else format(c, fmt) for c in cells)
                     + f" | {note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    accuracy = json.loads(Path("artifacts/classifier/metrics.json").read_text())["test_accuracy"]
    text = ("# AE vs VAE vs conditional VAE\n\n"
            f"Generated images judged by the digit classifier (test accuracy {accuracy:.4f}). "
            "The CVAE's grid is decoded for one digit, so its grid class balance is low by design. "
            "Written by `dvc repro` (stage `compare`); do not edit by hand.\n\n" + table(MODELS, ROWS))
    write_text(Path("artifacts/comparison.md"), text)


if __name__ == "__main__":
    run(main, compute=False)
