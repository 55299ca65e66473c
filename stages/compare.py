"""Stage compare: the AE vs VAE (vs conditional VAE) table of metrics, as Markdown (artifacts/comparison.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.lib import StageError, run
from stages.lib.files import write_text

MODELS = {"ae": "AE", "vae": "VAE", "cvae": "CVAE"}
VAES = ("vae", "cvae")
# (row label, file, dotted key, format, what it says[, the models that have it: "–" for the others])
# Every other cell must be in its file: a missing key is an error, never a silent "–".
ROWS = [
    ("test reconstruction (nats/image)", "metrics.json", "test_reconstruction", ".1f", "lower is better"),
    ("test KL (nats/image)", "metrics.json", "test_kl", ".2f", "VAEs only", VAES),
    ("test negative ELBO (nats/image)", "metrics.json", "test_neg_elbo", ".1f", "lower is better", VAES),
    ("likelihood subset: negative ELBO", "likelihood.json", "neg_elbo", ".2f",
     "the test images of the two rows below (likelihood.images)", VAES),
    ("likelihood subset: NLL, IWAE (largest k)", "likelihood.json", "iwae.k_max.nll", ".2f",
     "importance-weighted bound on -log p(x); AE: no likelihood", VAES),
    ("likelihood subset: NLL, quadrature", "likelihood.json", "quadrature.nll_fine", ".2f",
     "-log p(x) summed over a grid of z: near-exact", VAES),
    ("likelihood subset: pixel entropy floor", "likelihood.json", "entropy_floor", ".1f",
     "in every NLL: grey pixels are not binary", VAES),
    ("grid: recognisable share", "evaluation.json", "grid.recognisable_share", ".3f",
     "decodes the classifier labels with p >= threshold"),
    ("grid: class balance", "evaluation.json", "grid.class_balance", ".3f", "1 = every digit equally often"),
    ("grid: mean confidence", "evaluation.json", "grid.mean_confidence", ".3f", ""),
    ("samples: recognisable share", "evaluation.json", "samples.recognisable_share", ".3f",
     "VAE: z ~ N(0, I); AE: uniform in its codes' box"),
    ("samples: class balance", "evaluation.json", "samples.class_balance", ".3f", ""),
    ("samples: mean confidence", "evaluation.json", "samples.mean_confidence", ".3f", ""),
    ("conditional accuracy", "evaluation.json", "conditional_accuracy", ".3f",
     "CVAE: generated digit = conditioning digit", ("cvae",)),
    ("kNN accuracy of test codes", "evaluation.json", "knn_accuracy", ".3f", "how well codes separate digits"),
    ("per-digit std spread (CV)", "evaluation.json", "latent.std_spread", ".3f",
     "0 = all digits equally wide"),
    ("widest / narrowest digit std", "evaluation.json", "latent.std_ratio", ".2f", ""),
]


class CompareError(StageError):
    """A metrics file or key the table needs is missing or not a number."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CompareError(f"{path}: not found (run the stage that writes it: dvc repro)") from None
    except json.JSONDecodeError as e:
        raise CompareError(f"{path}: not valid JSON ({e})") from None


def lookup(data: dict, dotted: str, path: Path) -> float:
    """The number at ``dotted`` in ``data`` (read from ``path``); CompareError naming both if absent."""
    value: Any = data
    for part in dotted.split("."):
        if part == "k_max" and isinstance(value, dict):  # the largest k_<k> present
            ks = [int(k[2:]) for k in value if k.startswith("k_") and k[2:].isdigit()]
            part = f"k_{max(ks)}" if ks else part
        if not isinstance(value, dict) or part not in value:
            raise CompareError(f"{path}: no key '{dotted}' (compare's row for it); "
                               f"the file has {sorted(data)}")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CompareError(f"{path}: '{dotted}' is {value!r}, not a number")
    return value


def table(models: dict[str, str], rows: list, root: Path = Path("artifacts")) -> str:
    # Only the files a model's rows need: the AE has no likelihood.json.
    needed = {(m, r[1]) for r in rows for m in (r[5] if len(r) > 5 else models) if m in models}
    files = {(m, f): read_json(root / m / f) for m, f in needed}
    lines = ["| metric | " + " | ".join(models.values()) + " | note |",
             "| --- | " + " | ".join("---:" for _ in models) + " | --- |"]
    for label, file, key, fmt, note, *only in rows:
        has = only[0] if only else tuple(models)
        cells = [format(lookup(files[m, file], key, root / m / file), fmt) if m in has else "–"
                 for m in models]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    classifier = Path("artifacts/classifier/metrics.json")
    accuracy = lookup(read_json(classifier), "test_accuracy", classifier)
    text = ("# AE vs VAE vs conditional VAE\n\n"
            f"Generated images judged by the digit classifier (test accuracy {accuracy:.4f}). "
            "The CVAE's grid is decoded for one digit, so its grid class balance is low by design. "
            "Written by `dvc repro` (stage `compare`); do not edit by hand.\n\n" + table(MODELS, ROWS))
    write_text(Path("artifacts/comparison.md"), text)


if __name__ == "__main__":
    run(main, compute=False)
