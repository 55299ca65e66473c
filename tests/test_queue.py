"""The experiment queue end to end: three β queued, two workers, every result in `dvc exp show`."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import yaml

from tests.conftest import Project, copy_of, tiny_base

BETAS = ["0.5", "2", "4"]
METRICS = "artifacts/vae/metrics.json"


def stage_processes(project: Project) -> dict[int, tuple[str, str | None]]:
    """Running stage processes of ``project`` (its queue's temporary workspaces included):
    pid -> (stage module, its TF_NUM_INTRAOP_THREADS)."""
    found: dict[int, tuple[str, str | None]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = Path(proc / "cwd").resolve()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours
            continue
        modules = [a.decode() for a in cmdline if a.startswith(b"stages.")]
        if b"-m" not in cmdline or not modules:
            continue
        if cwd != project.path and project.path not in cwd.parents:
            continue
        values = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"TF_NUM_INTRAOP_THREADS=")]
        found[int(proc.name)] = (modules[0], values[0] if values else None)
    return found


def queue_states(project: Project) -> list[str]:
    """The status column of `dvc queue status`, one entry per task."""
    out = project.dvc("queue", "status").stdout
    return re.findall(r"\b(Queued|Running|Success|Failed)\b", out)


def experiments(project: Project) -> dict[str, dict]:
    """Name -> the `dvc exp show --json` data of each experiment on the workspace's commit."""
    found = {}
    for commit in json.loads(project.dvc("exp", "show", "--json").stdout):
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                found[rev.get("name") or rev["rev"]] = rev
    return found


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the queue's own limit below is 20 minutes
def test_three_queued_betas_run_two_at_a_time_and_all_show_up(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> None:
    proj = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "project", mnist_dir)
    for beta in BETAS:
        proj.dvc("exp", "run", "--queue", "-S", f"vae.beta={beta}")
    assert queue_states(proj) == ["Queued"] * 3

    start = time.monotonic()
    # Not into pipes: the detached workers inherit them, and reading them would wait for the queue.
    with open(tmp_path / "queue-start.log", "wb") as log:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=proj.path,
                       env=proj.env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120)
    threads: dict[int, tuple[str, str | None]] = {}  # every stage process seen, as last seen
    most_at_once, next_poll, states = 0, 0.0, ["Queued"]
    try:
        while {"Queued", "Running"} & set(states):
            assert time.monotonic() - start < 20 * 60, f"queue not done after 20 min: {states}"
            running = stage_processes(proj)
            threads.update(running)
            most_at_once = max(most_at_once, len(running))
            if time.monotonic() >= next_poll:  # each `dvc queue status` costs a second of CPU
                states = queue_states(proj)
                next_poll = time.monotonic() + 5
            time.sleep(0.5)
    finally:
        proj.dvc("queue", "stop", check=False)
    elapsed = time.monotonic() - start
    print(f"queue of {len(BETAS)} experiments, 2 workers: {elapsed:.0f} s")
    logs = "\n".join(proj.dvc("queue", "logs", name, check=False).stdout[-2000:]
                     for name in experiments(proj))
    assert states == ["Success"] * 3, f"{proj.dvc('queue', 'status').stdout}\n{logs}"

    # Two workers, two experiments at once, each stage on one TensorFlow thread (compute.portable);
    # the stages that compute nothing (`run(main, compute=False)`, e.g. compare) keep the default.
    assert most_at_once == 2, most_at_once
    idle = {f"stages.{f.stem}" for f in (proj.path / "stages").glob("*.py") if "compute=False" in f.read_text()}
    computing = {(module, value) for module, value in threads.values() if module not in idle}
    assert ("stages.train", "1") in computing and {v for _, v in computing} == {"1"}, threads

    exps = experiments(proj)
    assert len(exps) == 3, list(exps)
    found = {}
    for name, rev in exps.items():
        data = rev["data"]
        beta = data["params"]["params.yaml"]["data"]["vae"]["beta"]
        found[float(beta)] = data["metrics"][METRICS]["data"]["test_neg_elbo"]
    assert sorted(found) == sorted(float(b) for b in BETAS), found
    assert len(set(found.values())) == 3, found

    # Keep one: `dvc exp apply` brings its params and outputs into the workspace.
    best = min(exps, key=lambda name: exps[name]["data"]["metrics"][METRICS]["data"]["test_neg_elbo"])
    proj.dvc("exp", "apply", best)
    params = yaml.safe_load((proj.path / "params.yaml").read_text())
    metrics = json.loads((proj.path / METRICS).read_text())
    assert found[float(params["vae"]["beta"])] == metrics["test_neg_elbo"] == min(found.values())
    assert "up to date" in proj.dvc("status").stdout
