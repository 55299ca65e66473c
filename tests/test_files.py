"""stages/lib/files.py: every write is atomic (an interrupted write leaves the old file and no
temporary file), and a training stage's outputs are replaced all together or not at all."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from stages.lib import StageError, files, run


class Interrupted(Exception):
    pass


def listing(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (hidden temporary ones included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def old(tmp_path: Path) -> Path:
    """An existing file with known content."""
    path = tmp_path / "out.json"
    path.write_text("old\n")
    return path


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(old: Path) -> None:
    with pytest.raises(Interrupted):
        with files.atomic_path(old) as tmp:
            tmp.write_text("half of the new")
            raise Interrupted
    assert old.read_text() == "old\n"
    assert listing(old.parent) == ["out.json"]


def test_write_bytes_interrupted_inside_the_write(old: Path, monkeypatch) -> None:
    def write_half(self: Path, data: bytes) -> int:
        with open(self, "wb") as f:
            f.write(data[:3])
        raise Interrupted("disk full")

    monkeypatch.setattr(Path, "write_bytes", write_half)
    with pytest.raises(Interrupted):
        files.write_text(old, "new content\n")
    monkeypatch.undo()
    assert old.read_text() == "old\n"
    assert listing(old.parent) == ["out.json"]


def test_a_successful_write_replaces_the_file(old: Path) -> None:
    files.write_json(old, {"b": 1.23456, "a": np.float32(2)})
    assert old.read_text() == '{\n  "a": 2.0,\n  "b": 1.2346\n}\n'
    assert listing(old.parent) == ["out.json"]


@pytest.mark.parametrize("bad, key", [
    ({"grid": {"mean_confidence": float("nan")}}, "grid.mean_confidence"),
    ({"latent": {"per_digit": [1.0, np.float32("inf")]}}, "latent.per_digit[1]"),
    ({"knn_accuracy": np.float64("-inf")}, "knn_accuracy"),
])
def test_write_json_refuses_non_finite_numbers_naming_file_and_key(old: Path, bad: dict, key: str) -> None:
    with pytest.raises(files.NonFiniteError) as info:
        files.write_json(old, bad)
    message = str(info.value)
    assert str(old) in message and key in message, message
    assert isinstance(info.value, StageError)
    assert old.read_text() == "old\n"
    assert listing(old.parent) == ["out.json"]


def test_a_nan_in_a_stage_is_one_error_line_not_a_traceback(old: Path, capsys) -> None:
    """What evaluate and beta_sweep do with their scores: run(main) exits with one clear line."""
    def main() -> None:
        files.write_json(old, {"samples": {"mean_confidence": math.nan}})

    with pytest.raises(SystemExit) as info:
        run(main, compute=False)
    assert str(info.value) == (f"error: {old}: refusing to write a non-finite number to JSON: "
                               "samples.mean_confidence = nan")
    assert old.read_text() == "old\n"


def test_write_npz_interrupted_by_a_bad_array_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "codes.npz"
    files.write_npz(path, {"z": np.zeros(3)})
    before = path.read_bytes()
    # "a" is written first, then "b" cannot be (object arrays would need pickle).
    with pytest.raises(ValueError):
        files.write_npz(path, {"a": np.ones(1000), "b": np.array([{"x": 1}], dtype=object)})
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["codes.npz"]
    assert files.load_npz(path, ["z"])["z"].tolist() == [0, 0, 0]


def test_write_npz_is_reproducible(tmp_path: Path) -> None:
    arrays = {"b": np.arange(5), "a": np.eye(2, dtype=np.float32)}
    files.write_npz(tmp_path / "1.npz", arrays)
    files.write_npz(tmp_path / "2.npz", arrays)
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()


def test_atomic_folder_moves_all_files_or_none(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "a.txt").write_text("old a")
    (out / "b.txt").write_text("old b")
    with pytest.raises(Interrupted):
        with files.atomic_folder(out) as staging:
            files.write_text(staging / "a.txt", "new a")
            raise Interrupted  # before b.txt
    assert listing(tmp_path) == ["model", "model/a.txt", "model/b.txt"]
    assert (out / "a.txt").read_text() == "old a"

    with files.atomic_folder(out) as staging:
        files.write_text(staging / "a.txt", "new a")
        files.write_text(staging / "c.txt", "new c")
    assert listing(tmp_path) == ["model", "model/a.txt", "model/b.txt", "model/c.txt"]
    assert [(out / n).read_text() for n in ("a.txt", "b.txt", "c.txt")] == ["new a", "old b", "new c"]

    with pytest.raises(Interrupted):  # a folder that did not exist is not created
        with files.atomic_folder(tmp_path / "new") as staging:
            files.write_text(staging / "a.txt", "x")
            raise Interrupted
    assert not (tmp_path / "new").exists()


# --- a training stage's outputs: all new or all old ---------------------------------------------

HISTORY = {"loss": [2.0, 1.0], "test_loss": [2.5, 1.5]}


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_training_outputs_are_not_mixed_when_metrics_fail(tmp_path: Path) -> None:
    """A NaN metric: no file changes (it used to write the new models, then fail on metrics.json)."""
    from stages.lib import models, training

    out = tmp_path / "vae"
    first = models.build("vae", 2, (8, 4), seed=0)
    training.write_outputs(out, first, HISTORY, {"test_reconstruction": 3.0, "test_kl": 1.0})
    assert sorted(outputs(out)) == ["decoder.keras", "encoder.keras", "history.tsv", "metrics.json"]
    before = outputs(out)

    second = models.build("vae", 2, (8, 4), seed=1)  # other weights: other bytes
    with pytest.raises(files.NonFiniteError, match=r"vae/metrics\.json.*test_kl = nan"):
        training.write_outputs(out, second, {"loss": [9.0], "test_loss": [9.0]},
                               {"test_reconstruction": 2.0, "test_kl": float("nan")})
    assert outputs(out) == before
    assert listing(tmp_path) == ["vae", *(f"vae/{n}" for n in before)]

    training.write_outputs(out, second, HISTORY, {"test_reconstruction": 2.0, "test_kl": 0.5})
    after = outputs(out)
    assert all(after[n] != before[n] for n in ("encoder.keras", "decoder.keras", "metrics.json"))
    assert json.loads(after["metrics.json"]) == {"test_kl": 0.5, "test_reconstruction": 2.0}
    assert listing(tmp_path) == ["vae", *(f"vae/{n}" for n in after)]


def test_training_outputs_are_not_mixed_when_saving_fails(tmp_path: Path, monkeypatch) -> None:
    """The decoder cannot be saved after the encoder was: the old encoder stays."""
    from stages.lib import models, training

    out = tmp_path / "ae"
    training.write_outputs(out, models.build("ae", 2, (8, 4)), HISTORY, {"test_reconstruction": 3.0})
    before = outputs(out)
    save = models.save

    def save_then_fail(model, path) -> None:
        if Path(path).name == "decoder.keras":
            raise Interrupted("disk full")
        save(model, path)

    monkeypatch.setattr(models, "save", save_then_fail)
    with pytest.raises(Interrupted):
        training.write_outputs(out, models.build("ae", 2, (8, 4)), HISTORY, {"test_reconstruction": 1.0})
    assert outputs(out) == before
    assert listing(tmp_path) == ["ae", *(f"ae/{n}" for n in before)]
