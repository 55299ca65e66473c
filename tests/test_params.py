"""params.yaml validation: every error names the key, the value and what is allowed."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import yaml
from ruamel.yaml import YAML

from stages.lib import params
from tests.conftest import ROOT


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


GOOD_AE = {"latent_dim": 2, "hidden": [128, 16], "epochs": 50, "batch_size": 128,
           "learning_rate": 0.001, "seed": 0}


def test_project_params_are_valid() -> None:
    """Every block of the committed params.yaml has a schema and passes it: the blocks are read from
    the file itself, so a block added without a schema fails here."""
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    blocks = [f"generate.{model}" for model in committed["generate"]] + [b for b in committed if b != "generate"]
    missing = [b for b in blocks if b not in params.BLOCKS]
    assert not missing, f"params.yaml blocks without a schema in params.BLOCKS: {missing}"
    for block in blocks:
        params.load(block, params.BLOCKS[block], ROOT / "params.yaml")


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


def write_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_yaml_1_2_numbers_as_dvc_reads_them(tmp_path: Path) -> None:
    """DVC reads params.yaml as YAML 1.2 (ruamel.yaml): 1e-3 is a number, not PyYAML's string."""
    ae = "\n".join(f"  {k}: {v}" for k, v in {**GOOD_AE, "hidden": "[128, 16]", "learning_rate": "1e-3"}.items())
    p = params.load("ae", params.TrainParams, write_text(tmp_path, f"ae:\n{ae}\n"))
    assert p.learning_rate == 0.001 and isinstance(p.learning_rate, float)
    assert params.read_params(write_text(tmp_path, "a: 1e-3\nb: yes\nc: 017\n")) == {"a": 0.001, "b": "yes", "c": 17}


def test_int_fills_a_float_and_a_list_fills_a_tuple(tmp_path: Path) -> None:
    p = params.load("ae", params.TrainParams, write(tmp_path, {"ae": {**GOOD_AE, "learning_rate": 1}}))
    assert p.learning_rate == 1.0 and isinstance(p.learning_rate, float) and p.hidden == (128, 16)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        p.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize("block, schema, yaml_text, message", [
    ("vae", params.VAEParams, "vae: {learning_rate: .inf}",
     r"vae.learning_rate: expected a finite number > 0, got inf"),
    ("generate.vae", params.GridParams, "generate: {vae: {x: [0, .nan]}}",
     r"generate.vae.x\[1\]: expected a finite number, got nan"),
    ("plot", params.PlotParams, "plot: {style: nonexistent}",
     r"plot.style: expected a matplotlib style, one of \['default', .*'ggplot'.*\], got 'nonexistent'"),
    ("plot", params.PlotParams, "plot: {scatter: {cmap: tab11}}",
     r"plot.scatter.cmap: expected a matplotlib colormap, got 'tab11'; did you mean 'tab10'"),
    ("classifier", params.ClassifierParams, "classifier: {learning_rate: true}",
     r"classifier.learning_rate: expected a number > 0, got True"),
    ("classifier", params.ClassifierParams, "classifier: {epochs: '3'}",
     r"classifier.epochs: expected an integer >= 1, got '3'"),
    ("compute", params.ComputeParams, "compute: {portable: 1}", r"compute.portable: expected true or false, got 1"),
    ("compute", params.ComputeParams, "compute: {portable: yes}", r"compute.portable: expected true or false, got 'yes'"),
    ("compute", params.ComputeParams, "compute: {threads: 0}", r"compute.threads: expected an integer >= 1 and <= 8, got 0"),
    ("compute", params.ComputeParams, "compute: {threads: 2.0}", r"compute.threads: expected an integer >= 1 and <= 8, got 2.0"),
    ("data", params.DataParams, "data: {binarize: static}",
     r"data.binarize: expected one of \['none', 'dynamic'\], got 'static'"),
    ("beta_sweep", params.BetaSweepParams, "beta_sweep: {betas: [1, -2]}",
     r"beta_sweep.betas\[1\]: expected a number >= 0, got -2"),
    ("generate.vae", params.GridParams, "generate: {vae: {x: [2, -2]}}",
     r"generate.vae.x: expected \[low, high\] with low < high, got \[2.0, -2.0\]"),
    ("generate.vae", params.GridParams, "generate: {vae: {x: [-2, 2, 3]}}",
     r"generate.vae.x: expected \[low, high\] with low < high, got \[-2.0, 2.0, 3.0\]"),
    ("generate.vae", params.GridParams, "generate: {vae: {x: [-20, 20]}}",
     r"generate.vae.x: 401 grid points with step 0.1; at most 201 allowed"),
    ("generate.vae", params.GridParams, "generate: {vae: {x: [-1e308, 1e308]}}",
     r"generate.vae.x: inf grid points with step 0.1; at most 201 allowed"),
    ("paper.models.davidson", params.PaperModelParams, "paper: {models: {davidson: {scale: std}}}",
     r"paper.models.davidson.scale: expected one of \['log_var', 'softplus'\], got 'std'"),
    ("plot", params.PlotParams, "plot: {histograms: 60}",
     r"plot.histograms: expected a mapping with keys \['bins'\], got 60"),
])
def test_bad_inputs_give_one_clear_line(tmp_path: Path, block: str, schema: type, yaml_text: str,
                                        message: str) -> None:
    """Issue #16: each bad value is one line naming the file, the dotted key, the value and what is allowed."""
    data = params.read_params(ROOT / "params.yaml")
    node = data
    for part in block.split("."):
        node = node[part]
    bad = YAML(typ="safe").load(yaml_text)
    for part in block.split("."):
        bad = bad[part]
    for key, value in bad.items():  # one level of nesting is enough here (plot.scatter)
        node[key] = {**node[key], **value} if isinstance(value, dict) and isinstance(node[key], dict) else value
    path = write(tmp_path, data)
    with pytest.raises(params.ParamsError) as err:
        params.load(block, schema, path)
    text = str(err.value)
    assert "\n" not in text and "pydantic" not in text and "http" not in text, text
    assert text.startswith(f"{path}: "), text
    assert re.search(message, text), text


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, {"ae": {**GOOD_AE, "epochs": 0, "seed": -1, "extra": 1}})
    with pytest.raises(params.ParamsError) as err:
        params.load("ae", params.TrainParams, path)
    assert str(err.value).splitlines() == [
        f"{path}: ae.epochs: expected an integer >= 1, got 0",
        f"{path}: ae.seed: expected an integer >= 0, got -1",
        f"{path}: ae: unknown key(s) ['extra']; allowed: {sorted(GOOD_AE)}",
    ]


def test_invalid_items_are_not_also_reported_as_too_few(tmp_path: Path) -> None:
    path = write(tmp_path, {"ae": {**GOOD_AE, "hidden": [True]}})
    with pytest.raises(params.ParamsError) as err:
        params.load("ae", params.TrainParams, path)
    assert str(err.value) == f"{path}: ae.hidden[0]: expected an integer >= 1, got True"


def test_duplicate_keys_are_not_valid_yaml(tmp_path: Path) -> None:
    path = write_text(tmp_path, "ae:\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(params.ParamsError, match=r"not valid YAML: found duplicate key \"epochs\".*\(line 3, column 3\)"):
        params.read_params(path)


def test_validation_does_not_import_tensorflow() -> None:
    """Bad params fail fast: params.py must not pull in TensorFlow, Keras or (eagerly) matplotlib."""
    code = ("import sys; from stages.lib import params; params.load('vae', params.VAEParams, 'params.yaml'); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
