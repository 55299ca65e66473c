"""The weights train@<model> records through training: artifacts/<model>/snapshots.npz (issue 24).

The encoder's at every epoch from 0 (the initialisation, before any step) to the last; the
decoder's at a few epochs (DECODER_EPOCHS that exist, and the last). The encoder's feed stage
evolution@<model> (the codes of a test subset at every epoch, without retraining when the subset
or the figure changes); the decoder's, the explorer's replay of training.

Layout: one NPZ of float32 arrays, no pickles. ``encoder_epochs`` (0, 1, ..., E) and, for each
encoder weight of path ``<layer>/<name>``, ``encoder.<layer>.<name>`` with a leading epoch axis;
``decoder_epochs`` and ``decoder.<layer>.<name>`` likewise.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import keras
import numpy as np

from stages.lib import StageError
from stages.lib.files import load_npz

FILE = "snapshots.npz"
DECODER_EPOCHS = (1, 2, 5, 10)   # besides the last; early epochs, where the decodes change most
PARTS = ("encoder", "decoder")


def key(part: str, path: str) -> str:
    """``encoder``, ``hidden_1/kernel`` -> ``encoder.hidden_1.kernel``."""
    return f"{part}.{path.replace('/', '.')}"


def arrays(recorded: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """The NPZ's arrays from ``recorded[part][epoch][path]`` (epochs in any order, stacked ascending)."""
    out: dict[str, np.ndarray] = {}
    for part in PARTS:
        epochs = sorted(recorded[part])
        out[f"{part}_epochs"] = np.array(epochs, dtype=np.int32)
        for path in recorded[part][epochs[0]]:
            out[key(part, path)] = np.stack([recorded[part][e][path] for e in epochs]).astype(np.float32)
    return out


class Recorder(keras.callbacks.Callback):
    """Records the weights through training: the encoder's at epoch 0, before any step, and at the end
    of every epoch; the decoder's at DECODER_EPOCHS and the last. Pass it to training.train.

    It only reads the variables (get_weights), never calls a model: calling the encoder runs the
    Sampling layer, whose seed generator advances on every call, and that would change the training.
    Nor does it touch the data or the validation, and it has no batch hooks (Keras keeps its
    asynchronous dispatch). So the trained models are byte-identical with or without it
    (tests/test_training.py). The replay ends at the saved model: after an early stopping that
    restored the best epoch's weights, the epochs after it are dropped (``arrays``).
    """
    file = FILE

    def __init__(self) -> None:
        super().__init__()
        self.recorded: dict[str, dict[int, dict[str, np.ndarray]]] = {part: {} for part in PARTS}
        self._last_decoder: tuple[int, dict[str, np.ndarray]] | None = None

    @staticmethod
    def _weights(model: keras.Model) -> dict[str, np.ndarray]:
        return {w.path: np.array(v, dtype=np.float32) for w, v in zip(model.weights, model.get_weights())}

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.recorded = {"encoder": {0: self._weights(self.model.encoder)}, "decoder": {}}
        self._last_decoder = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.recorded["encoder"][epoch + 1] = self._weights(self.model.encoder)
        decoder = self._weights(self.model.decoder)
        if epoch + 1 in DECODER_EPOCHS:
            self.recorded["decoder"][epoch + 1] = decoder
        self._last_decoder = (epoch + 1, decoder)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._last_decoder is not None:
            self.recorded["decoder"].setdefault(*self._last_decoder)

    def arrays(self) -> dict[str, np.ndarray]:
        """The NPZ's arrays, ending at the epoch whose weights the model holds now (the saved model)."""
        final = self._weights(self.model.encoder)
        same = [e for e, w in self.recorded["encoder"].items()
                if all(np.array_equal(w[k], v) for k, v in final.items())]
        if same and max(same) < max(self.recorded["encoder"]):  # an early stopping restored epoch max(same)
            last = max(same)
            self.recorded = {part: {e: w for e, w in self.recorded[part].items() if e <= last} for part in PARTS}
            self.recorded["decoder"][last] = self._weights(self.model.decoder)
        return arrays(self.recorded)


@dataclass(frozen=True)
class Snapshots:
    """A snapshots.npz, read: ``weights(part, epoch)`` gives that epoch's weights by path."""
    file: Path
    epochs: Mapping[str, np.ndarray]        # part -> recorded epochs, ascending
    data: Mapping[str, np.ndarray]          # key -> (n_epochs, *shape)

    def weights(self, part: str, epoch: int, paths: list[str]) -> list[np.ndarray]:
        """``part``'s weights at ``epoch`` in the order of ``paths`` (a model's ``w.path`` list)."""
        at = np.flatnonzero(self.epochs[part] == epoch)
        if len(at) != 1:
            raise StageError(f"{self.file}: no {part} snapshot at epoch {epoch}; it holds epochs "
                             f"{self.epochs[part].tolist()}")
        missing = [p for p in paths if key(part, p) not in self.data]
        if missing:
            raise StageError(f"{self.file}: no {part} weights {missing} (a model of another shape?); "
                             f"rerun train (dvc repro)")
        return [self.data[key(part, p)][at[0]] for p in paths]


def load(path: str | Path) -> Snapshots:
    """Read every array of ``path`` (never unpickling); a file without the layout raises a StageError."""
    path = Path(path)
    load_npz(path, [])  # a missing file: the message says which stage writes it
    with np.load(path, allow_pickle=False) as f:
        names = list(f.files)
    if not all(f"{part}_epochs" in names for part in PARTS):
        raise StageError(f"{path}: expected arrays encoder_epochs and decoder_epochs; it holds {sorted(names)}")
    data = load_npz(path, names)
    return Snapshots(path, {part: data.pop(f"{part}_epochs") for part in PARTS}, data)
