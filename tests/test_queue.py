"""The experiment queue end to end: two β queued, and one bad param after them, two workers; never
more than two experiments at once, the two trainings side by side; every good result in `dvc exp
show`, each having rerun only the VAE's branch, the bad one reported failed with its one-line error;
the best one applied to the workspace."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

import yaml

from tests.conftest import Project, copy_of, ran, tiny_base

# Two good ones and the bad one: three tasks for two workers, so a third at once would show.
BETAS = ["0.5", "2"]
BAD = ("bad-epochs", "vae.epochs=0", "params.yaml: vae.epochs: expected an integer >= 1, got 0")
METRICS = "artifacts/vae/metrics.json"


TICKS = os.sysconf("SC_CLK_TCK")


class Seen(NamedTuple):
    """A stage process, or an experiment's (`dvc exp exec-run`), as one look at /proc found it."""
    module: str           # stages.<name>, or EXPERIMENT
    threads: str | None   # its TF_NUM_INTRAOP_THREADS
    tensorflow: bool      # TensorFlow loaded: compute.apply has run it with the settings (it applies first)
    started: float        # seconds since boot, the kernel's record: no polling in it
    seen: float           # seconds since boot, this look


EXPERIMENT = "exec-run"  # the process a queue worker starts for each experiment, in its temporary workspace


def stage_processes(project: Project) -> dict[int, Seen]:
    """Running stage and experiment processes of ``project`` (its queue's temporary workspaces
    included), by pid."""
    found: dict[int, Seen] = {}
    now = float(Path("/proc/uptime").read_text().split()[0])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if EXPERIMENT.encode() in cmdline:
                modules = [EXPERIMENT]
            else:
                modules = [a.decode() for a in cmdline if a.startswith(b"stages.")] if b"-m" in cmdline else []
            if not modules:
                continue
            cwd = Path(proc / "cwd").resolve()
            if cwd != project.path and project.path not in cwd.parents:
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
            tensorflow = "_pywrap_tensorflow" in (proc / "maps").read_text()
            started = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[19]) / TICKS
        except (OSError, IndexError, ValueError):  # gone meanwhile, or not ours
            continue
        values = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"TF_NUM_INTRAOP_THREADS=")]
        found[int(proc.name)] = Seen(modules[0], values[0] if values else None, tensorflow, started, now)
    return found


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


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
@pytest.mark.timeout(3000)  # the queue's own limit below is 20 minutes, after the wait for the shared tiny pipeline
def test_queued_betas_run_two_at_a_time_and_all_show_up(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> None:
    proj = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "project", mnist_dir)
    before = {m: (proj.path / f"artifacts/{m}/metrics.json").read_text() for m in ("ae", "vae")}
    for beta in BETAS:
        proj.dvc("exp", "run", "--queue", "-S", f"vae.beta={beta}")
    proj.dvc("exp", "run", "--queue", "-n", BAD[0], "-S", BAD[1])  # the workers take the good ones first
    assert queue_states(proj) == ["Queued"] * 3

    start = time.monotonic()
    # Not into pipes: the detached workers inherit them, and reading them would wait for the queue.
    with open(tmp_path / "queue-start.log", "wb") as log:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=proj.path,
                       env=proj.env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120)
    looks: dict[int, list[Seen]] = {}  # every look at every stage process
    next_poll, states = 0.0, ["Queued"]
    try:
        while {"Queued", "Running"} & set(states):
            assert time.monotonic() - start < 20 * 60, f"queue not done after 20 min: {states}"
            for pid, seen in stage_processes(proj).items():
                looks.setdefault(pid, []).append(seen)
            if time.monotonic() >= next_poll:  # each `dvc queue status` costs a second of CPU
                states = queue_states(proj)
                next_poll = time.monotonic() + 5
            time.sleep(0.5)
    finally:
        proj.dvc("queue", "stop", check=False)
    elapsed = time.monotonic() - start
    print(f"queue of {len(BETAS) + 1} experiments (one bad), 2 workers: {elapsed:.0f} s")
    logs = "\n".join(proj.dvc("queue", "logs", name, check=False).stdout[-2000:]
                     for name in [*experiments(proj), BAD[0]])
    assert sorted(states) == ["Failed"] + ["Success"] * len(BETAS), f"{proj.dvc('queue', 'status').stdout}\n{logs}"
    # The bad one: failed, with the stage's one-line error in its log, and nothing of it kept.
    status = proj.dvc("queue", "status").stdout
    assert re.search(rf"{BAD[0]}.*Failed", status), status
    bad_log = proj.dvc("queue", "logs", BAD[0], check=False).stdout
    assert f"error: {BAD[2]}" in bad_log and "Traceback" not in bad_log, bad_log[-3000:]

    # Two workers, two experiments at once: the three experiments' lifetimes (from the kernel's start
    # time to the last look) overlap two at a time, never three, and so do the two trainings. Each
    # stage that has loaded TensorFlow computes on one thread (compute.portable), whenever it was
    # looked at; before compute.apply runs it again with them, a stage has neither TensorFlow nor the
    # setting yet.
    runs = [(seen[0].started, seen[-1].seen) for seen in looks.values() if seen[0].module == EXPERIMENT]
    assert len(runs) == len(BETAS) + 1 and most_at_once(runs) == 2, (runs, looks)
    trainings = [(seen[0].started, seen[-1].seen) for seen in looks.values()
                 if seen[0].module == "stages.train" and any(s.tensorflow for s in seen)]  # the bad one stops before
    assert len(trainings) == len(BETAS) and most_at_once(trainings) == 2, (trainings, looks)
    with_tf = {(s.module, s.threads) for seen in looks.values() for s in seen if s.tensorflow}
    assert ("stages.train", "1") in with_tf and {v for _, v in with_tf} == {"1"}, with_tf

    exps = {name: rev for name, rev in experiments(proj).items() if name != BAD[0]}
    assert len(exps) == len(BETAS), list(exps)
    # What an experiment on vae.beta reran: the VAE's branch, not the AE's, the data or the sweep.
    for name in exps:
        rerun = ran(proj.dvc("queue", "logs", name).stdout)
        assert {"train@vae", "evaluate@vae"} <= rerun, (name, rerun)
        assert not [s for s in rerun if s.endswith("@ae") or s in ("fetch", "beta_sweep")], (name, rerun)
    found = {}
    for name, rev in exps.items():
        data = rev["data"]
        beta = data["params"]["params.yaml"]["data"]["vae"]["beta"]
        found[float(beta)] = data["metrics"][METRICS]["data"]["test_neg_elbo"]
    assert sorted(found) == sorted(float(b) for b in BETAS), found
    assert len(set(found.values())) == len(BETAS), found

    # Keep one: `dvc exp apply` brings its params and outputs into the workspace.
    best = min(exps, key=lambda name: exps[name]["data"]["metrics"][METRICS]["data"]["test_neg_elbo"])
    proj.dvc("exp", "apply", best)
    params = yaml.safe_load((proj.path / "params.yaml").read_text())
    metrics = json.loads((proj.path / METRICS).read_text())
    assert found[float(params["vae"]["beta"])] == metrics["test_neg_elbo"] == min(found.values())
    assert "up to date" in proj.dvc("status").stdout
    assert (proj.path / "artifacts/ae/metrics.json").read_text() == before["ae"]
    assert (proj.path / "artifacts/vae/metrics.json").read_text() != before["vae"]
    shown = proj.dvc("exp", "show", "--md").stdout
    assert "vae.beta" in shown and "test_neg_elbo" in shown
    assert yaml.safe_load((proj.path / "params.yaml").read_text())["vae"]["epochs"] >= 1
