"""params.yaml validation: every error names the key, the value and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stages.lib import params
from tests.conftest import ROOT


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


GOOD_AE = {"latent_dim": 2, "hidden": [128, 16], "epochs": 50, "batch_size": 128,
           "learning_rate": 0.001, "seed": 0}


def test_project_params_are_valid() -> None:
    """Every block of the committed params.yaml passes its schema."""
    for block, schema in params.BLOCKS.items():
        params.load(block, schema, ROOT / "params.yaml")


def test_valid_block_is_typed(tmp_path: Path) -> None:
    p = params.load("ae", params.TrainParams, write(tmp_path, {"ae": GOOD_AE}))
    assert p.hidden == (128, 16) and p.learning_rate == 0.001 and isinstance(p.learning_rate, float)


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "ae.epochs: expected an integer >= 1, got 0"),
    ({"epochs": 2.5}, "ae.epochs: expected an integer >= 1, got 2.5"),
    ({"epochs": True}, "ae.epochs: expected an integer >= 1, got True"),
    ({"learning_rate": "fast"}, "ae.learning_rate: expected a number > 0, got 'fast'"),
    ({"hidden": 128}, "ae.hidden: expected a list of an integer >= 1, got 128"),
    ({"hidden": [128, -1]}, r"ae.hidden\[1\]: expected an integer >= 1, got -1"),
    ({"hidden": []}, r"ae.hidden: expected at least 1 item\(s\), got \[\]"),
    ({"epoch": 3}, r"ae: unknown key\(s\) \['epoch'\]; allowed: \['batch_size', 'epochs'"),
])
def test_invalid_values_are_named(tmp_path: Path, change: dict, message: str) -> None:
    path = write(tmp_path, {"ae": {**GOOD_AE, **change}})
    with pytest.raises(params.ParamsError, match=message) as err:
        params.load("ae", params.TrainParams, path)
    assert str(path) in str(err.value)


def test_missing_key_and_block(tmp_path: Path) -> None:
    ae = dict(GOOD_AE)
    del ae["seed"]
    path = write(tmp_path, {"ae": ae})
    with pytest.raises(params.ParamsError, match=r"missing key ae.seed \(an integer >= 0\)"):
        params.load("ae", params.TrainParams, path)
    with pytest.raises(params.ParamsError, match="missing block 'vae'"):
        params.load("vae", params.VAEParams, path)


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("ae: [unclosed\n")
    with pytest.raises(params.ParamsError, match="not valid YAML"):
        params.load("ae", params.TrainParams, path)
