"""Shared fixtures: the real MNIST mirror, a real HTTP server, a real S3 server, a temporary DVC project."""
from __future__ import annotations

import fcntl
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest
import yaml

if TYPE_CHECKING:
    from tests.s3server import S3Server

ROOT = Path(__file__).resolve().parents[1]


# --- in CI a skip is a failure ------------------------------------------------------------------

def in_ci() -> bool:
    """CI sets CI=true (GitHub Actions, GitLab, .ci/run's callers); "", "0", "false" do not count."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):  # (file, line, "Skipped: reason")
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


_CI_SKIPS = pytest.StashKey[list]()


def _fail_skip(config: pytest.Config, report: Any, nodeid: str) -> None:
    reason = _skip_reason(report)
    report.outcome = "failed"
    report.longrepr = f"skipped in CI (CI={os.environ.get('CI')}), which counts as a failure: {reason}"
    config.stash.setdefault(_CI_SKIPS, []).append(f"{nodeid}: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a whole module skipped at import (pytest.skip(allow_module_level=True), importorskip)."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        _fail_skip(collector.config, report, report.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """With CI set, a skipped test (skip() in a fixture or test, a skip mark, a failed importorskip)
    is reported as failed, its reason kept: CI must not pass without testing a required component.
    Deselected tests (-m "not slow") are not skips and stay out. Outside CI skips stay skips."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(item.config, report, item.nodeid)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    skips = config.stash.get(_CI_SKIPS, [])
    if skips:
        terminalreporter.section("skips turned into failures (CI is set)", red=True)
        for line in skips:
            terminalreporter.line(line)
    cpu_summary(terminalreporter)


# --- CPU time per test: under pytest-xdist, --durations' wall times include waiting for a core ------

def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for (their subprocesses too)."""
    import resource

    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usages)


def _timed_phase(item: pytest.Item) -> Iterator[None]:
    start = _cpu_seconds()
    yield
    item.user_properties.append(("cpu_s", _cpu_seconds() - start))  # reaches the controller in the report


pytest_runtest_setup = pytest.hookimpl(hookwrapper=True)(_timed_phase)
pytest_runtest_call = pytest.hookimpl(hookwrapper=True)(_timed_phase)
pytest_runtest_teardown = pytest.hookimpl(hookwrapper=True)(_timed_phase)

CPU_TOP = 15


def cpu_summary(terminalreporter: Any) -> None:
    """The tests that used most CPU (set-up, call and teardown: a shared fixture counts where it was
    built), and the total, beside --durations: two cores idle or busy show in the ratio to wall time.
    Processes nobody waits for are not counted: DVC's queue workers detach (tests/test_queue.py and
    tests/test_machines.py train more than their figure says)."""
    cpu = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) == "teardown":
                cpu[report.nodeid] = sum(v for k, v in report.user_properties if k == "cpu_s")
    if not cpu:
        return
    terminalreporter.section(f"CPU seconds per test, top {CPU_TOP} (the test's process and its subprocesses)")
    for nodeid, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])[:CPU_TOP]:
        terminalreporter.line(f"{seconds:9.1f}  {nodeid}")
    terminalreporter.line(f"{sum(cpu.values()):9.1f}  in all, {len(cpu)} tests")


# --- order: `make test` runs pytest-xdist workers, each taking whole files in this order ---------

# pytest-xdist hands each worker one file, then one more as soon as it has at most two tests left.
# First a file whose slow test builds the shared tiny pipeline (tiny_base: ten minutes); then
# test_portable (one test, its emulated CPUs at a low priority for most of the run) and a short
# file, which waits behind it on that worker; then the long files that do not need the tiny
# pipeline, so that the workers have work while it builds; then everything else.
FIRST_FILES = ["test_binarize.py", "test_portable.py", "test_paper.py", "test_protocol.py", "test_metrics.py",
               "test_training.py", "test_classifier.py", "test_likelihood.py", "test_mnist.py",
               "test_stages_wiring.py", "test_models.py", "test_params.py", "test_map.py", "test_files.py",
               "test_plotting.py", "test_ci_skips.py"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(FIRST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept


# --- projects -----------------------------------------------------------------------------------

# What a project copy needs: the pipeline definition and its code.
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]
# What `make report` needs beside the pipeline's files.
TOOLING = ["Makefile", "requirements.txt", "tools"]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The local MNIST mirror: $MNIST_MIRROR if it is a folder, else ../shared/mnist."""
    candidates = [os.environ.get("MNIST_MIRROR", ""), str(ROOT.parent / "shared" / "mnist")]
    for c in candidates:
        if c and (Path(c) / "t10k-labels-idx1-ubyte.gz").exists():
            return Path(c).resolve()
    pytest.fail("MNIST files not found: set MNIST_MIRROR to a folder holding the four .gz files "
                f"(tried {[c for c in candidates if c]})")


class FileServer:
    """A real HTTP server on 127.0.0.1 serving a folder, in a background thread."""

    def __init__(self, directory: Path, handler: type = http.server.SimpleHTTPRequestHandler):
        class Quiet(handler):  # type: ignore[misc, valid-type]
            def log_message(self, *args: Any) -> None:
                pass
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., FileServer]]:
    servers: list[FileServer] = []

    def start(directory: Path, handler: type = http.server.SimpleHTTPRequestHandler) -> FileServer:
        servers.append(FileServer(directory, handler))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One running S3 server (SeaweedFS) for the whole session; stopped at its end."""
    # Imported here: tests/test_ci_skips.py runs this file alone, away from the tests package.
    from tests.s3server import S3Server
    weed = shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if weed is None:
        pytest.skip("no `weed` binary (SeaweedFS): install requirements-test.txt (`make setup-test`)")
    server = S3Server(weed, tmp_path_factory.mktemp("seaweedfs") / "server")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the session's S3 server, for one test."""
    client = s3_server.client()
    name = f"vae-team-{len(client.list_buckets()['Buckets']) + 1}"
    client.create_bucket(Bucket=name)
    return name


def free_port_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: this venv's python first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


# No subprocess of a test runs longer: a hung DVC lock or queue fails the test in minutes, with
# what the process printed, instead of running into CI's limit.
SUBPROCESS_TIMEOUT = 900


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise AssertionError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s:\n{out[-4000:]}\n"
                             f"{err[-4000:]}") from None
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def dvc(*args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, env, check, timeout)


def ran(output: str) -> set[str]:
    """The stages whose command DVC ran, from its output (`dvc repro`, `dvc exp run`, `dvc queue logs`)."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def restored(output: str) -> set[str]:
    """The stages DVC restored from its run-cache instead of running them, from its output."""
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run, checking out outputs", output))


def deep_update(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


class Project:
    """A copy of this project in a temporary git + DVC repository."""

    def __init__(self, path: Path, mnist_dir: Path):
        self.path = path
        self.env = tool_env(MNIST_MIRROR=str(mnist_dir))

    def set_params(self, changes: dict) -> None:
        file = self.path / "params.yaml"
        file.write_text(yaml.safe_dump(deep_update(yaml.safe_load(file.read_text()), changes),
                                       sort_keys=False))

    def dvc(self, *args: str, check: bool = True, env: dict | None = None,
            timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
        return dvc(*args, cwd=self.path, env=env or self.env, check=check, timeout=timeout)

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return run(["git", *args], self.path, self.env)

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)


# Params that make the whole pipeline run in a few minutes: 1000 images, 4 epochs for the AE, VAE and
# CVAE (8 steps each: seconds), so that their replay of training has decoder snapshots at epochs 1,
# 2 and 4, and an epoch between two of them (3), as the default 50 epochs have; 1 for the classifier.
TINY = {"data": {"train_limit": 1000}, "ae": {"epochs": 4}, "vae": {"epochs": 4}, "cvae": {"epochs": 4},
        "classifier": {"epochs": 1}, "evaluate": {"n_samples": 500}, "beta_sweep": {"betas": [2]},
        # Briefly trained models have narrow, irregular posteriors, which the default grid does not resolve
        # within 0.05 nats: a loose tolerance here (tests/test_likelihood.py checks convergence on
        # 5-epoch models); few images keep it quick.
        "likelihood": {"images": 100, "iwae_k": [1, 10, 100], "grid": {"points": 201, "tolerance": 0.5}}}


@pytest.fixture
def project(tmp_path: Path, mnist_dir: Path) -> Project:
    return copy_project(tmp_path / "project", mnist_dir)


def copy_project(path: Path, mnist_dir: Path) -> Project:
    """The pipeline's files in a new git repository at ``path``, committed."""
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        src, dst = ROOT / name, path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    proj = Project(path, mnist_dir)
    run(["git", "init", "-q", "-b", "main"], path)
    proj.git("config", "user.email", "test@example.com")
    proj.git("config", "user.name", "test")
    proj.commit("project copy")
    return proj


# --- shared tiny projects: the tiny pipeline takes minutes, so it runs once per session -----------

def shared_temp(factory: pytest.TempPathFactory) -> Path:
    """This run's temporary folder that every pytest-xdist worker sees (each has its own below it)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` under the run's shared temp, built by ``build`` the first time only.

    On disk, not in memory: pytest may import a test module under two names, and `make test` runs
    several pytest-xdist workers; a file lock makes the others wait for the build instead of
    repeating it. A build that failed is not tried again: its other users fail at once, with its error.
    """
    root = shared_temp(factory)
    path = root / name
    ready, failed = (root / f"{name}.{state}" for state in ("ready", "failed"))
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if failed.exists():
            pytest.fail(f"the shared fixture {name!r} failed to build earlier in this run:\n{failed.read_text()}")
        if not ready.exists():
            shutil.rmtree(path, ignore_errors=True)
            try:
                build(path)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}"[-8000:])
                raise
            ready.touch()
    return path


def copy_of(src: Project, dst: Path, mnist_dir: Path) -> Project:
    """An independent copy of a project: work tree, git history and DVC cache."""
    shutil.copytree(src.path, dst, symlinks=True)
    shutil.rmtree(dst / ".dvc" / "tmp", ignore_errors=True)  # locks and hash state of the original
    return Project(dst, mnist_dir)


def tiny_base(factory: pytest.TempPathFactory, mnist_dir: Path) -> Project:
    """The project and its tooling with TINY params, reproduced and committed. Tests copy it."""
    def build(path: Path) -> None:
        proj = copy_project(path, mnist_dir)
        for name in TOOLING:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, path / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, path / name)
        # `make` finds its venv at .venv: link this interpreter's (a symlink, so excluded by hand).
        (path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
        with open(path / ".git" / "info" / "exclude", "a") as f:
            f.write("/.venv\n")
        proj.set_params(TINY)
        proj.dvc("repro", timeout=2400)  # about 30 stages: ten minutes alone, more beside other tests
        proj.commit("tiny run")

    return Project(once(factory, "tiny-base", build), mnist_dir)


# The change tests/test_report.py reviews, made once on a copy of tiny_base and shared: it retrains
# only the VAE, so its metrics and figures move, the AE's do not.
CHANGE = {"vae": {"beta": 0.5}}


def _repro_log(path: Path) -> Path:
    """Where reviewed() keeps what its `dvc repro` printed: beside the project, out of its git status."""
    return path.parent / f"{path.name}.repro.log"


def reviewed(factory: pytest.TempPathFactory, mnist_dir: Path) -> Project:
    """A copy of tiny_base with CHANGE made and reproduced but not committed: a change to review.
    What its `dvc repro` printed is in reviewed_output()."""
    def build(path: Path) -> None:
        proj = copy_of(tiny_base(factory, mnist_dir), path, mnist_dir)
        proj.set_params(CHANGE)
        _repro_log(path).write_text(proj.dvc("repro").stdout)

    return Project(once(factory, "reviewed", build), mnist_dir)


def reviewed_output(project: Project) -> str:
    """The output of the `dvc repro` that made ``project`` (reviewed())."""
    return _repro_log(project.path).read_text()
