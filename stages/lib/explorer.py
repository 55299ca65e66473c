"""The latent explorer: one self-contained HTML page that runs the models in the browser.

The page (template: explorer.html beside this file) gets every model's dense layers as
base64 float32, the test-set codes of each model as base64 float32 with the digits as
uint8, and a subset of test images as uint8. Its own JavaScript runs the encoder and the
decoder (matmul, relu, sigmoid), so it needs no server, no network and no other file.

A Dense layer travels as its kernel transposed, (out, in) row-major, so that output j is
the dot product of row j with the input. A conditional model's input is the concatenation
[pixels or z, one-hot digit], as in stages/lib/models.py.

The replay of training (the AE, the VAE and the CVAE, issue 24): evolution@<model>'s codes of a
test subset at every epoch but the last (whose codes are the final ones, already in the page), and
the decoder snapshots train@<model> recorded but the last (the final decoder), both as float32
rounded to their 3 high bytes (a 15-bit mantissa, relative error 2^-16; ``float24``). For the
decoders, measured on the real ones: 6.3e-4 per pixel at most, where float16 was 1.9e-2 off
(tests/test_explorer.py holds it under 1e-3).
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
MAX_PAGE_BYTES = 18_000_000   # issue 24: the page with the default params stays under 18 MB


@dataclass(frozen=True)
class ModelSource:
    """Where one model of the page comes from."""
    id: str              # ae, vae, cvae, beta_2 ...
    label: str           # what the picker shows
    kind: str            # ae, vae or cvae
    beta: float | None   # the KL weight (VAEs)
    folder: Path         # holds encoder.keras and decoder.keras
    encodings: Path | None  # encodings.npz of the encode stage; None: the page's stage encodes
    replay: bool = False    # the folder holds snapshots.npz and evolution.npz (train@, evolution@)


def sources(betas: tuple[float, ...], main_beta: float, cvae_beta: float) -> list[ModelSource]:
    """AE, VAE, CVAE, then every beta-VAE of the sweep (by beta)."""
    art = Path("artifacts")
    out = [ModelSource("ae", "AE", "ae", None, art / "ae", art / "ae" / "encodings.npz", True),
           ModelSource("vae", f"VAE (β = {main_beta:g}, main)", "vae", main_beta, art / "vae",
                       art / "vae" / "encodings.npz", True),
           ModelSource("cvae", f"Conditional VAE (β = {cvae_beta:g})", "cvae", cvae_beta, art / "cvae",
                       art / "cvae" / "encodings.npz", True)]
    for beta in sorted(set(betas)):
        out.append(ModelSource(sweep_name(beta), f"β-VAE (β = {beta:g})", "vae", beta,
                               SWEEP_MODELS / sweep_name(beta), None))
    return out


def b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def float24(array: np.ndarray) -> np.ndarray:
    """float32 values rounded to nearest on their 3 high bytes, as the page's replay carries them."""
    a = np.ascontiguousarray(array, dtype="<f4")
    if not np.isfinite(a).all():
        raise StageError("a decoder snapshot or replay code is NaN or infinite (rerun dvc repro)")
    rounded = ((a.view("<u4").astype(np.uint64) + 0x80) >> 8) << 8   # round half away from zero
    return rounded.astype("<u4").view("<f4").reshape(a.shape)


def b64_f24(array: np.ndarray) -> str:
    """float24(array) as base64 of its 3 high bytes per value, little-endian."""
    u = float24(array).view("<u4").ravel()
    return base64.b64encode(np.ascontiguousarray(u.view(np.uint8).reshape(-1, 4)[:, 1:]).tobytes()).decode("ascii")


def dense(layer, f24: bool = False) -> dict:
    """One keras Dense layer: transposed kernel and bias as base64 float32 (``f24``: their 3 high
    bytes, see float24), and its activation."""
    kernel, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
    activation = layer.activation.__name__
    if activation not in ("relu", "sigmoid", "linear"):
        raise StageError(f"layer {layer.name}: activation {activation} is not one the page runs")
    pack = b64_f24 if f24 else (lambda a: b64(a, "<f4"))
    return {"name": layer.name, "nin": int(kernel.shape[0]), "nout": int(kernel.shape[1]),
            "act": activation, "W": pack(kernel.T), "b": pack(bias), "f24": f24}


def hidden_layers(model) -> list:
    hidden = [layer for layer in model.layers if layer.name.startswith("hidden_")]
    return sorted(hidden, key=lambda layer: int(layer.name.split("_")[1]))


def encoder_spec(encoder, kind: str) -> dict:
    heads = ("z",) if kind == "ae" else ("z_mean", "z_log_var")
    return {"trunk": [dense(layer) for layer in hidden_layers(encoder)],
            "heads": {h: dense(encoder.get_layer(h)) for h in heads}}


def decoder_spec(decoder, f24: bool = False) -> dict:
    return {"layers": [dense(layer, f24) for layer in hidden_layers(decoder)] + [dense(decoder.get_layer("pixels"), f24)]}


def replay_entry(src: ModelSource, decoder, codes: np.ndarray, evolution: dict[str, np.ndarray], snaps) -> dict:
    """What the page needs to replay ``src``'s training: evolution@'s codes of its test subset at every
    epoch and the decoder snapshots but the last, the final decoder (3-byte weights, see float24).

    ``decoder`` is the final decoder (its weights are set to each snapshot's in turn, and back);
    ``codes`` the final test codes. The replay's last epoch must be the saved model: its codes and
    decoder are the final ones (an early stopping that restored earlier weights breaks this).
    """
    last = int(evolution["epochs"][-1])
    index = evolution["index"]
    if len(codes) > 1 << 16:
        raise StageError(f"{src.id}: {len(codes)} test codes; the page indexes them with 16 bits")
    if not np.array_equal(evolution["codes"][-1], codes[index]):
        raise StageError(f"{src.folder / 'evolution.npz'}: the last epoch's codes are not encode@{src.id}'s test "
                         f"codes of the same images: the saved model is not the last epoch's (rerun dvc repro)")
    paths = [w.path for w in decoder.weights]
    final = decoder.get_weights()
    epochs = [int(e) for e in snaps.epochs["decoder"]]
    if epochs[-1] != last or not all(np.array_equal(a, b) for a, b in zip(snaps.weights("decoder", last, paths), final)):
        raise StageError(f"{snaps.file}: the last decoder snapshot (epoch {epochs[-1]}) is not {src.folder}/decoder.keras "
                         f"of epoch {last} (rerun dvc repro)")
    decoders = []
    try:
        for epoch in epochs[:-1]:
            decoder.set_weights(snaps.weights("decoder", epoch, paths))
            decoders.append({"epoch": epoch, **decoder_spec(decoder, f24=True)})
    finally:
        decoder.set_weights(final)
    # The codes of epochs 0 to last - 1 (the last epoch's are the final codes), 3 bytes each as the
    # decoders' weights: 2^-16 of a code, far below a pixel at any zoom the plane allows without
    # losing the dots; it keeps the default page 0.8 MB under its bound.
    return {"last": last, "n": int(len(index)), "index": b64(index, "<u2"),
            "codes": b64_f24(evolution["codes"][:-1]), "decoders": decoders, "decoder_epochs": epochs}


def extent(codes: np.ndarray, pad: float = 0.05) -> list[float]:
    """[x0, x1, y0, y1]: the box of the codes, padded by ``pad`` of its size (the page's first view)."""
    lo, hi = codes.min(axis=0).astype(np.float64), codes.max(axis=0).astype(np.float64)
    size = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad * size, hi + pad * size
    return [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])]


def model_entry(src: ModelSource, encoder, decoder, codes: np.ndarray, replay: dict | None = None,
                replay_codes: np.ndarray | None = None) -> dict:
    """One model of the page; ``replay``: its replay_entry, for the models whose training was recorded,
    and ``replay_codes`` the codes of every epoch it replays (evolution.npz's)."""
    latent_dim = int(decoder.inputs[0].shape[-1])
    if latent_dim != 2:
        raise StageError(f"{src.id}: the explorer draws a 2-D latent plane; the decoder has {latent_dim}")
    # The first view holds the codes; with a replay, also those of every epoch (the AE's early codes
    # can lie outside its final ones' box), so that the dots move and the frame does not.
    box = codes if replay_codes is None else np.concatenate([codes, replay_codes.reshape(-1, 2)])
    return {"id": src.id, "label": src.label, "kind": src.kind, "beta": src.beta,
            "conditional": src.kind == "cvae", "latent_dim": latent_dim,
            "encoder": encoder_spec(encoder, src.kind), "decoder": decoder_spec(decoder),
            "codes": b64(codes, "<f4"), "extent": extent(box), "replay": replay}


def image_subset(n_test: int, n: int, seed: int) -> np.ndarray:
    """Indices of the test images the page carries for its random-image button, in order."""
    return np.sort(np.random.default_rng(seed).choice(n_test, size=min(n, n_test), replace=False))


def payload(models: list[dict], y_test: np.ndarray, images: np.ndarray, image_labels: np.ndarray,
            image_index: np.ndarray, steps: int) -> dict:
    return {"models": models, "labels": b64(y_test, "u1"), "n_codes": int(len(y_test)),
            "images": b64(images.reshape(len(images), -1), "u1"), "image_labels": b64(image_labels, "u1"),
            "image_index": [int(i) for i in image_index], "steps": steps}


def render(data: dict, template: str | None = None, max_bytes: int = MAX_PAGE_BYTES,
           name: str = "the explorer page") -> str:
    """The page: the template with the data as a JSON literal (``</`` escaped for the script tag).

    Raises a StageError naming ``name`` (the page's file) if the page would exceed ``max_bytes``.
    """
    template = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    if template.count(PLACEHOLDER) != 1:
        raise ValueError(f"{TEMPLATE}: expected the placeholder {PLACEHOLDER} once")
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True).replace("</", "<\\/")
    page = template.replace(PLACEHOLDER, text)
    size = len(page.encode("utf-8"))
    if size > max_bytes:
        raise StageError(f"{name}: {size} bytes, over the page's bound of {max_bytes} (explorer.MAX_PAGE_BYTES); "
                         "nothing written. Lower explore.images or evolution.images, or train fewer epochs")
    return page
