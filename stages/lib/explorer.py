"""The latent explorer: one self-contained HTML page that runs the models in the browser.

The page (template: explorer.html beside this file) gets every model's dense layers as
base64 float32, the test-set codes of each model as base64 float32 with the digits as
uint8, and a subset of test images as uint8. Its own JavaScript runs the encoder and the
decoder (matmul, relu, sigmoid), so it needs no server, no network and no other file.

A Dense layer travels as its kernel transposed, (out, in) row-major, so that output j is
the dot product of row j with the input. A conditional model's input is the concatenation
[pixels or z, one-hot digit], as in stages/lib/models.py.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.lib import StageError
from stages.lib.sweep import SWEEP_MODELS, sweep_name

TEMPLATE = Path(__file__).with_name("explorer.html")
PLACEHOLDER = "/*__EXPLORER_DATA__*/null"


@dataclass(frozen=True)
class ModelSource:
    """Where one model of the page comes from."""
    id: str              # ae, vae, cvae, beta_2 ...
    label: str           # what the picker shows
    kind: str            # ae, vae or cvae
    beta: float | None   # the KL weight (VAEs)
    folder: Path         # holds encoder.keras and decoder.keras
    encodings: Path | None  # encodings.npz of the encode stage; None: the page's stage encodes


def sources(betas: tuple[float, ...], main_beta: float, cvae_beta: float) -> list[ModelSource]:
    """AE, VAE, CVAE, then every beta-VAE of the sweep (by beta)."""
    art = Path("artifacts")
    out = [ModelSource("ae", "AE", "ae", None, art / "ae", art / "ae" / "encodings.npz"),
           ModelSource("vae", f"VAE (β = {main_beta:g}, main)", "vae", main_beta, art / "vae",
                       art / "vae" / "encodings.npz"),
           ModelSource("cvae", f"Conditional VAE (β = {cvae_beta:g})", "cvae", cvae_beta, art / "cvae",
                       art / "cvae" / "encodings.npz")]
    for beta in sorted(set(betas)):
        out.append(ModelSource(sweep_name(beta), f"β-VAE (β = {beta:g})", "vae", beta,
                               SWEEP_MODELS / sweep_name(beta), None))
    return out


def b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def dense(layer) -> dict:
    """One keras Dense layer: transposed kernel and bias as base64 float32, and its activation."""
    kernel, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
    activation = layer.activation.__name__
    if activation not in ("relu", "sigmoid", "linear"):
        raise StageError(f"layer {layer.name}: activation {activation} is not one the page runs")
    return {"name": layer.name, "nin": int(kernel.shape[0]), "nout": int(kernel.shape[1]),
            "act": activation, "W": b64(kernel.T, "<f4"), "b": b64(bias, "<f4")}


def hidden_layers(model) -> list:
    hidden = [layer for layer in model.layers if layer.name.startswith("hidden_")]
    return sorted(hidden, key=lambda layer: int(layer.name.split("_")[1]))


def encoder_spec(encoder, kind: str) -> dict:
    heads = ("z",) if kind == "ae" else ("z_mean", "z_log_var")
    return {"trunk": [dense(layer) for layer in hidden_layers(encoder)],
            "heads": {h: dense(encoder.get_layer(h)) for h in heads}}


def decoder_spec(decoder) -> dict:
    return {"layers": [dense(layer) for layer in hidden_layers(decoder)] + [dense(decoder.get_layer("pixels"))]}


def extent(codes: np.ndarray, pad: float = 0.05) -> list[float]:
    """[x0, x1, y0, y1]: the box of the codes, padded by ``pad`` of its size (the page's first view)."""
    lo, hi = codes.min(axis=0).astype(np.float64), codes.max(axis=0).astype(np.float64)
    size = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad * size, hi + pad * size
    return [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])]


def model_entry(src: ModelSource, encoder, decoder, codes: np.ndarray) -> dict:
    latent_dim = int(decoder.inputs[0].shape[-1])
    if latent_dim != 2:
        raise StageError(f"{src.id}: the explorer draws a 2-D latent plane; the decoder has {latent_dim}")
    return {"id": src.id, "label": src.label, "kind": src.kind, "beta": src.beta,
            "conditional": src.kind == "cvae", "latent_dim": latent_dim,
            "encoder": encoder_spec(encoder, src.kind), "decoder": decoder_spec(decoder),
            "codes": b64(codes, "<f4"), "extent": extent(codes)}


def image_subset(n_test: int, n: int, seed: int) -> np.ndarray:
    """Indices of the test images the page carries for its random-image button, in order."""
    return np.sort(np.random.default_rng(seed).choice(n_test, size=min(n, n_test), replace=False))


def payload(models: list[dict], y_test: np.ndarray, images: np.ndarray, image_labels: np.ndarray,
            image_index: np.ndarray, steps: int) -> dict:
    return {"models": models, "labels": b64(y_test, "u1"), "n_codes": int(len(y_test)),
            "images": b64(images.reshape(len(images), -1), "u1"), "image_labels": b64(image_labels, "u1"),
            "image_index": [int(i) for i in image_index], "steps": steps}


def render(data: dict, template: str | None = None) -> str:
    """The page: the template with the data as a JSON literal (``</`` escaped for the script tag)."""
    template = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    if template.count(PLACEHOLDER) != 1:
        raise ValueError(f"{TEMPLATE}: expected the placeholder {PLACEHOLDER} once")
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True).replace("</", "<\\/")
    return template.replace(PLACEHOLDER, text)
