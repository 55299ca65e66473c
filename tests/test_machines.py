"""Several machines (docs/several-machines.md): a sweep split by hand between two clones, reviewed
on a third, through a git remote (a bare repository) and the DVC remote (an S3 bucket on the
session's SeaweedFS), with DVC's own commands only.

One run of each experiment serves every step: the split (1), the review (2), what the run-cache
saves across machines (3) and the failed pushes and their recovery (4).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Project, copy_of, ran, restored, run, tiny_base
from tests.s3server import S3Server, s3_env

METRIC = "artifacts/vae/metrics.json:test_neg_elbo"
SPLIT = {"a": "0.5", "b": "4"}  # the vae.beta each machine runs
NOT_AN_EXPERIMENT = "no-such-experiment"
# Keras, writing to a file, prints one line per epoch ("8/8 - 18s - 2s/step - kl: ... - loss: ...",
# after "Epoch i/n" when n > 1): the trace of a training.
TRAINING = re.compile(r"^(Epoch \d+/\d+$|\d+/\d+ - .*\bloss: )", re.M)
EXP_REF = re.compile(r"^refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/(?P<name>[^/]+)$")


def trained(output: str) -> set[str]:
    """The stages whose command printed a training's epoch lines."""
    parts = re.split(r"^Running stage '([^']+)':$", output, flags=re.M)
    return {name for name, body in zip(parts[1::2], parts[2::2]) if TRAINING.search(body)}


def lock_outs(lock: str) -> dict[str, str]:
    """Every output file in a dvc.lock text and its md5 (directories left out)."""
    return {o["path"]: o["md5"] for stage in yaml.safe_load(lock)["stages"].values()
            for o in stage.get("outs", []) if not o["md5"].endswith(".dir")}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def remote_key(md5_: str) -> str:
    return f"vae-dvc/files/md5/{md5_[:2]}/{md5_[2:]}"


def in_local_cache(project: Project, md5_: str) -> bool:
    return (project.path / ".dvc" / "cache" / "files" / "md5" / md5_[:2] / md5_[2:]).is_file()


def outputs_in_git(project: Project) -> tuple[set[str], set[str]]:
    """(stages with an output DVC does not cache, those outputs' paths): the metrics, plots and
    table reviewers read in git (dvc.yaml: `cache: false`). From DVC's own view of dvc.yaml, so
    stage names are not spelled here."""
    from dvc.repo import Repo
    with Repo(str(project.path)) as repo:
        stages = {s.name: [o.def_path for o in s.outs if not o.use_cache] for s in repo.index.stages}
    return {s for s, paths in stages.items() if paths}, {p for paths in stages.values() for p in paths}


def machine(team_git: Path, path: Path, mnist_dir: Path) -> Project:
    """A clone of the team's repository with the DVC remote's credentials in the AWS variables."""
    run(["git", "clone", "-q", str(team_git), str(path)], path.parent)
    m = Project(path, mnist_dir)
    m.git("config", "user.email", f"{path.name}@example.com")
    m.git("config", "user.name", path.name)
    m.env = s3_env(m, secret=S3Server.SECRET_KEY)
    return m


def experiment_refs(m: Project) -> dict[str, str]:
    """name -> full ref of each finished experiment in ``m`` (queued ones live under other refs)."""
    lines = m.git("for-each-ref", "--format=%(refname)", "refs/exps/").stdout.split()
    return {match["name"]: ref for ref in lines if (match := EXP_REF.match(ref))}


def run_queues(machines: list[Project], logs: Path, timeout: float = 15 * 60) -> None:
    """`dvc queue start` on each machine at once; back when every queue is done."""
    for m in machines:
        # Not into pipes: the detached worker inherits them, and reading them would wait for it.
        with open(logs / f"queue-start-{m.path.name}.log", "wb") as log:
            subprocess.run([sys.executable, "-m", "dvc", "queue", "start"], cwd=m.path, env=m.env,
                           stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120)
    deadline, pending = time.monotonic() + timeout, list(machines)
    next_status = time.monotonic() + 30
    while pending:
        assert time.monotonic() < deadline, f"queues not done after {timeout} s"
        time.sleep(2)
        # A finished experiment gets its ref, cheap to look for; `dvc queue status` costs a second
        # of CPU, taken from the runs: only to confirm, or every 30 s to catch a failure.
        due = time.monotonic() >= next_status
        if due:
            next_status = time.monotonic() + 30
        for m in [m for m in pending if due or experiment_refs(m)]:
            status = m.dvc("queue", "status").stdout
            states = re.findall(r"\b(Queued|Running|Success|Failed)\b", status)
            if "Failed" in states:
                failed = re.findall(r"^\S+\s+(\S+)\s.*\bFailed\b", status, re.M)
                raise AssertionError(f"{m.path.name}: {status}\n"
                                     f"{m.dvc('queue', 'logs', *failed[:1], check=False).stdout[-3000:]}")
            if states and set(states) == {"Success"}:
                pending.remove(m)


class Clock:
    """Prints how long each phase took (pytest -rP shows it)."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()

    def __call__(self, phase: str) -> None:
        now = time.monotonic()
        print(f"{phase}: {now - self.last:.0f} s "
              f"(total {now - self.start:.0f} s, load average {os.getloadavg()[0]:.1f})")
        self.last = now


@pytest.mark.slow
def test_a_sweep_split_over_two_machines_is_reviewed_on_a_third(
        s3_server: S3Server, s3_bucket: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        mnist_dir: Path) -> None:
    base = tiny_base(tmp_path_factory, mnist_dir)
    clock = Clock()

    # 0. One commit, its outputs in the DVC remote, on the team's git server (a bare repository).
    origin = copy_of(base, tmp_path / "origin", mnist_dir)
    origin.env = s3_env(origin, secret=S3Server.SECRET_KEY)
    origin.dvc("remote", "add", "-d", "storage", f"s3://{s3_bucket}/vae-dvc")
    origin.dvc("remote", "modify", "storage", "endpointurl", s3_server.endpoint)
    origin.commit("DVC remote on S3")
    origin.dvc("push")
    baseline_keys = set(s3_server.keys(s3_bucket))
    team = tmp_path / "team.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(team)], tmp_path)
    origin.git("push", "-q", str(team), "main")
    a, b, c = (machine(team, tmp_path / name, mnist_dir) for name in ("a", "b", "c"))
    for m in (a, b, c):
        m.dvc("pull")
        assert "Data and pipelines are up to date." in m.dvc("status").stdout
    stages_in_git, paths_in_git = outputs_in_git(origin)
    clock("0. baseline pushed, three clones pulled")

    # 1. Split the sweep: each machine queues and runs its own experiment, both at the same time.
    for m in (a, b):
        m.dvc("exp", "run", "--queue", "-S", f"vae.beta={SPLIT[m.path.name]}")
    try:
        run_queues([a, b], tmp_path)
    except BaseException:  # no worker left training after the test
        for m in (a, b):
            m.dvc("queue", "stop", "--kill", check=False)
        raise
    clock("1. one experiment on each of two machines, at once")
    (name_a, ref_a), = experiment_refs(a).items()
    (name_b, ref_b), = experiment_refs(b).items()
    names = {a: name_a, b: name_b}
    locks = {a: a.git("show", f"{ref_a}:dvc.lock").stdout, b: b.git("show", f"{ref_b}:dvc.lock").stdout}
    log_a = a.dvc("queue", "logs", name_a).stdout
    ran_a, trained_a = ran(log_a), trained(log_a)
    assert trained_a, log_a[-3000:]  # the detector sees the training where one ran
    assert ran_a and ran_a == ran(b.dvc("queue", "logs", name_b).stdout)  # one param, the same stages
    # What each experiment computed anew, in the DVC cache (the files in git travel with its commit).
    new = {m: {h for p, h in lock_outs(locks[m]).items()
               if p not in paths_in_git and remote_key(h) not in baseline_keys} for m in (a, b)}
    assert new[a] and new[b] and all(in_local_cache(m, h) for m in (a, b) for h in new[m])

    # 4. Bad input. A pushes without credentials, B to a bucket that does not exist: DVC pushes the
    # git refs first, then the data, so both fail half-way, with DVC's error.
    refused = a.dvc("exp", "push", "origin", env=s3_env(a, secret=None), check=False)
    assert refused.returncode != 0, refused.stdout
    assert "ERROR: failed to push cache: Unable to locate credentials" in refused.stderr, refused.stderr
    assert f"Pushed experiment {name_a} to Git remote 'origin'." in refused.stdout
    b.dvc("remote", "add", "--local", "nobucket", "s3://vae-no-such-bucket/vae-dvc")
    b.dvc("remote", "modify", "--local", "nobucket", "endpointurl", s3_server.endpoint)
    refused = b.dvc("exp", "push", "origin", "-r", "nobucket", check=False)
    assert refused.returncode != 0, refused.stdout
    assert "ERROR: failed to push cache: The specified bucket does not exist" in refused.stderr, refused.stderr
    assert f"Pushed experiment {name_b} to Git remote 'origin'." in refused.stdout
    # Half-pushed: the refs are on the git remote, the data is not in the DVC remote; each machine
    # keeps its experiment and its outputs.
    on_team = run(["git", "ls-remote", str(team), "refs/exps/*"], tmp_path).stdout
    for m, ref in ((a, ref_a), (b, ref_b)):
        assert f"{m.git('rev-parse', ref).stdout.strip()}\t{ref}" in on_team, on_team
        assert names[m] in m.dvc("exp", "list", "--name-only").stdout.split()
        assert all(in_local_cache(m, h) for h in new[m])
    keys = set(s3_server.keys(s3_bucket))
    assert not {remote_key(h) for m in (a, b) for h in new[m]} & keys
    # A reviewer pulling now gets the experiments without their outputs, and only a warning.
    early = c.dvc("exp", "pull", "origin")
    assert "Some of the cache files do not exist neither locally nor on remote" in early.stderr, early.stderr
    # The recovery: push again. The refs are up to date, the data goes.
    for m in (a, b):
        again = m.dvc("exp", "push", "origin")
        assert f"Experiment {names[m]} is up to date on Git remote 'origin'." in again.stdout, again.stdout
        assert re.search(r"\b\d+ files? uploaded", again.stdout), again.stdout
    keys = set(s3_server.keys(s3_bucket))
    assert {remote_key(h) for m in (a, b) for h in new[m]} <= keys
    assert a.git("status", "--porcelain").stdout == b.git("status", "--porcelain").stdout == ""
    # No run-cache unless asked for.
    assert not [k for k in keys if k.startswith("vae-dvc/runs/")]
    clock("4. two half-pushes, each pushed again")

    # 3. A sends its run-cache; B runs A's experiment again with `--pull`, which fetches the
    # run-cache and the outputs it names. It runs in the background while C reviews (2).
    a.dvc("push", "--run-cache")
    keys = set(s3_server.keys(s3_bucket))
    assert [k for k in keys if k.startswith("vae-dvc/runs/")]
    # DVC 3.67.1 keeps a stage's uncached files (metrics, plots) in the local cache for its
    # run-cache, but no push sends them (dvc/repo/push.py collects only cached outputs).
    in_git_a = {h for p, h in lock_outs(locks[a]).items() if p in paths_in_git}
    assert {h for h in in_git_a if in_local_cache(a, h)}
    assert not {remote_key(h) for h in in_git_a} & keys
    rerun_log = tmp_path / "b-rerun.log"
    with open(rerun_log, "wb") as log:
        rerun = subprocess.Popen(
            [sys.executable, "-m", "dvc", "exp", "run", "--pull", "-S", f"vae.beta={SPLIT['a']}"],
            cwd=b.path, env=b.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # 2. Review them together on C: pull them all, compare, apply the best, pull its outputs.
        listed = c.dvc("exp", "list", "origin", "--name-only").stdout.split()
        assert sorted(listed) == sorted(names.values()), listed
        # C has the refs since its early pull: DVC says there is nothing to pull, and fetches the outputs.
        assert "No experiments to pull." in c.dvc("exp", "pull", "origin").stdout
        table = c.dvc("exp", "show", "--only-changed", "--sort-by", METRIC, "--csv").stdout
        rows = [r for r in csv.DictReader(io.StringIO(table)) if r["Experiment"]]
        assert {r["Experiment"]: r["vae.beta"] for r in rows} == {name_a: SPLIT["a"], name_b: SPLIT["b"]}, table
        scores = {r["Experiment"]: float(r[METRIC]) for r in rows}
        best = rows[0]["Experiment"]  # sorted, lowest first
        assert scores[best] == min(scores.values()) and len(set(scores.values())) == 2, scores
        c.dvc("exp", "apply", best)
        c.dvc("pull")
        by = a if best == name_a else b
        for path, h in lock_outs(locks[by]).items():  # byte for byte what the machine that ran it wrote
            assert md5(c.path / path) == h, path
        assert "Data and pipelines are up to date." in c.dvc("status").stdout
        dry = c.dvc("repro", "--dry").stdout
        assert not ran(dry), dry
        missing = c.dvc("exp", "pull", "origin", NOT_AN_EXPERIMENT, check=False)
        assert missing.returncode != 0
        assert f"ERROR: '{NOT_AN_EXPERIMENT}' is not a valid experiment name" in missing.stderr, missing.stderr
        clock("2. reviewed on C (B's rerun alongside)")
        assert rerun.wait(timeout=15 * 60) == 0, rerun_log.read_text()[-4000:]
    finally:
        if rerun.poll() is None:
            os.killpg(rerun.pid, signal.SIGKILL)
            rerun.wait()
    clock("3. B's rerun of A's experiment done")

    # 3. What the run-cache saved: every stage whose outputs are all in the DVC remote was restored;
    # each stage with a file in git ran again: compare, and here the training too, whose metrics
    # and history are in git. The results are A's, byte for byte.
    out = rerun_log.read_text()
    print(f"B restored {sorted(restored(out))}, ran {sorted(ran(out))}, trained in {sorted(trained(out))}")
    assert restored(out) == ran_a - stages_in_git and restored(out), out[-4000:]
    assert ran(out) == ran_a & stages_in_git, out[-4000:]
    assert trained(out) == trained_a & stages_in_git, out[-4000:]
    assert lock_outs((b.path / "dvc.lock").read_text()) == lock_outs(locks[a])
