"""The tools that README and docs figures come from: `make bench` and tools/stage_times.py, run for real."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_of, run, tiny_base


@pytest.mark.slow
def test_stage_times_prints_what_each_stage_did_and_took(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> None:
    proj = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "project", mnist_dir)
    proj.set_params({"plot": {"dpi": 81}})
    out = run([sys.executable, "-m", "tools.stage_times", "repro", "plot@vae"], proj.path, proj.env).stdout
    table = out[out.rindex("stage "):]
    rows = {m[0]: (m[1], float(m[2])) for m in re.findall(r"^(\S+)\s+(ran|restored|unchanged)\s+([\d.]+)$", table, re.M)}
    assert rows["plot@vae"][0] == "ran" and rows["plot@vae"][1] > 0, table
    assert rows["train@vae"][0] == "unchanged", table  # upstream, up to date
    assert re.search(r"^total\s+[\d.]+\s+\(exit 0\)$", table, re.M), table


@pytest.mark.slow
def test_make_bench_prints_the_four_setups_the_cpu_and_the_ratios(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> None:
    proj = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "project", mnist_dir)
    # bench/ is not among a project copy's files: it runs from here, on the copy's data/mnist.npz.
    out = run([sys.executable, "-m", "bench.train_speed", "--epochs", "2", "--images", "6000"], proj.path,
              {**proj.env, "PYTHONPATH": str(ROOT)}).stdout
    cpu = Path("/proc/cpuinfo").read_text().split("model name", 1)[1].split(":", 1)[1].splitlines()[0].strip()
    assert cpu in out and "6000 training images" in out, out
    rows = re.findall(r"^(notebook|default|threads|fast)\s+(.+?)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["notebook", "default", "threads", "fast"], out
    assert [r[1] for r in rows] == ["TensorFlow's defaults", "compute.portable: true", "portable, threads: 2",
                                    "compute.portable: false"]
    assert float(rows[0][3]) == 1.0 and all(float(r[2]) > 0 and 50 < float(r[4]) < 550 for r in rows), rows
    for s in ("default", "threads"):
        assert re.search(rf"fast / {s}, median of paired epochs\): [\d.]+x$", out, re.M), out
