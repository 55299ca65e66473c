"""`make report` and the PR workflow: a param change, its metric deltas and changed figures.

The reviewed change is made once, on a copy of the session's tiny project (tests/conftest.py: reviewed).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CHANGE, ROOT, Project, reviewed, run
from tools import report as tool

def declared_images(project: Path) -> list[str]:
    """The image files under the stages' `plots:` in the project's dvc.yaml, foreach resolved
    (read here from the YAML, independently of tools/report.py, which asks DVC)."""
    names: list[str] = []
    for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].values():
        items, body = (stage["foreach"], stage["do"]) if "foreach" in stage else ([None], stage)
        # A list foreach names ${item}; a mapping one names ${key} (its values are ${item}.<field>).
        keys = list(items) if isinstance(items, dict) else items
        for item in keys:
            for entry in body.get("plots") or []:
                name = entry if isinstance(entry, str) else next(iter(entry))
                if item is not None:
                    name = name.replace("${key}" if isinstance(items, dict) else "${item}", str(item))
                assert "${" not in name, f"unresolved template in {name}"
                names.append(name)
    assert not (yaml.safe_load((project / "dvc.yaml").read_text()).get("plots")), "top-level plots are gone"
    return [n for n in names if n.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".svg"))]  # evolution.gif too


def git_bytes(project: Project, rev: str, path: str) -> bytes | None:
    result = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=project.path, capture_output=True)
    return result.stdout if result.returncode == 0 else None


# --- reading the report -------------------------------------------------------------------------

def section(md: str, title: str) -> str:
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^### |\Z)", md, re.M | re.S)
    assert match, f"no '### {title}' section in the report:\n{md}"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text``, header and separator rows excluded."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return [r for r in rows if not all(set(c) <= set("-: ") for c in r)
            and r[0] not in ("Path", "File", "Figure")]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Project, str]:
    """The reviewed project and the report.md `make report REV=HEAD` wrote in it."""
    proj = reviewed(tmp_path_factory, mnist_dir)
    # -o setup: the linked venv is the one running these tests; a test must never reinstall it.
    run(["make", "-o", "setup", "report", "REV=HEAD"], proj.path, proj.env)
    md = proj.path / "report" / "report.md"
    assert md.is_file(), "`make report` wrote no report/report.md: is the Makefile's report target there?"
    return proj, md.read_text()


# --- make report on a real change ---------------------------------------------------------------

@pytest.mark.slow
def test_report_shows_the_param_change(made: tuple[Project, str]) -> None:
    proj, md = made
    old = yaml.safe_load(proj.git("show", "HEAD:params.yaml").stdout)["vae"]["beta"]
    rows = table_rows(section(md, "Params"))
    assert [r[1:] for r in rows] == [["vae.beta", str(old), str(CHANGE["vae"]["beta"])]], rows


@pytest.mark.slow
def test_report_lists_each_changed_metric_with_its_delta(made: tuple[Project, str]) -> None:
    proj, md = made
    cells = {(r[0].strip("`"), r[1].strip("`")): r for r in table_rows(section(md, "Metrics"))}
    shown = json.loads(proj.dvc("metrics", "show", "--json").stdout)[""]["data"]
    checked = 0
    for path in shown:
        old = flatten(json.loads(git_bytes(proj, "HEAD", path) or b"{}"))
        new = flatten(json.loads((proj.path / path).read_text()))
        for key in old.keys() | new.keys():
            if old.get(key) == new.get(key):
                assert (path, key) not in cells, f"unchanged {path} {key} listed"
                continue
            row = cells.get((path, key))
            assert row, f"changed metric {path} {key} missing from the report"
            assert float(row[2]) == pytest.approx(old[key], rel=1e-6)
            assert float(row[3]) == pytest.approx(new[key], rel=1e-6)
            assert float(row[4]) == pytest.approx(new[key] - old[key], rel=1e-3, abs=1e-12)
            checked += 1
    assert checked, "retraining the VAE should move some metric"
    assert len(cells) == checked
    assert not [p for p, _ in cells if "/ae/" in p], "the AE was not retrained: its metrics are unchanged"


@pytest.mark.slow
def test_report_shows_changed_figures_old_and_new_side_by_side(made: tuple[Project, str]) -> None:
    proj, md = made
    images = declared_images(proj.path)
    changed = {p for p in images if git_bytes(proj, "HEAD", p) != (proj.path / p).read_bytes()}
    assert changed, "retraining the VAE should change its figures"
    rows = {r[0].strip("`"): r for r in table_rows(section(md, "Figures"))}
    assert set(rows) == changed
    for path, row in rows.items():
        old, new = (re.fullmatch(r"!\[[^\]]*\]\(([^)]+)\)", cell).group(1) for cell in row[1:3])
        assert (proj.path / "report" / old).read_bytes() == git_bytes(proj, "HEAD", path), path
        assert (proj.path / "report" / new).read_bytes() == (proj.path / path).read_bytes(), path
    assert all(f"`{p}`" in section(md, "Figures") for p in set(images) - changed), "unchanged ones listed"


@pytest.mark.slow
def test_report_comes_with_the_plots_diff_page(made: tuple[Project, str]) -> None:
    proj, md = made
    page = proj.path / "report" / "plots" / "index.html"
    html = page.read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    both = [p for p in declared_images(proj.path) if git_bytes(proj, "HEAD", p) is not None]
    assert len(sources) == 2 * len(both)  # each figure at HEAD and in the workspace
    assert all((page.parent / s).is_file() for s in sources)
    assert "report/plots/index.html" in section(md, "Interactive plots")
    assert "Pipeline up to date" in md


# --- the tool without a pipeline run ------------------------------------------------------------

DVC_YAML = """
stages:
  draw:
    foreach: [a, b]
    do:
      cmd: echo ${item}
      outs: ["not/a/plot-${item}.png"]
      plots:
        - figs/${item}/one.png: {cache: false}
        - figs/${item}/history.tsv: {cache: false, x: epoch, y: loss}
  single:
    cmd: echo
    plots:
      - figs/two.PNG: {cache: false}
plots:
  - Loss: {x: epoch, y: {history.tsv: [loss]}}
  - top/three.png
  - Images: {y: {top/four.png: [x]}}
  - figs/two.PNG
"""


def test_plot_images_are_the_image_files_declared_as_plots(tmp_path: Path, monkeypatch) -> None:
    """Stage plots with foreach resolved, then top-level ones; in the workspace and at a revision."""
    monkeypatch.chdir(tmp_path)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "t"], [sys.executable, "-m", "dvc", "init", "-q"],
                ["git", "commit", "-q", "-m", "dvc init"], ["git", "tag", "before"]):
        run(cmd, tmp_path)
    assert tool.plot_images("before") == []  # no dvc.yaml at that revision
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-q", "-m", "plots"], tmp_path)
    expected = ["figs/a/one.png", "figs/b/one.png", "figs/two.PNG", "top/three.png", "top/four.png"]
    assert tool.plot_images() == expected
    # The workspace changes; the revision keeps what was committed.
    (tmp_path / "dvc.yaml").write_text(DVC_YAML.replace("[a, b]", "[c]").split("plots:\n  - Loss")[0])
    assert tool.plot_images() == ["figs/c/one.png", "figs/two.PNG"]
    assert tool.plot_images("HEAD") == expected


def test_deltas_are_signed_and_relative() -> None:
    assert tool.fmt_delta(2.0, 2.5) == ("+0.5", "+25.00%")
    assert tool.fmt_delta(0, 1) == ("+1", "—")
    assert tool.fmt_delta(None, 1.0) == ("—", "—")
    assert tool.fmt_delta("a", "b") == ("—", "—")
    assert [tool.fmt_value(v) for v in (None, 506.4133, 3, "a|b")] == ["—", "506.4133", "3", "a\\|b"]


def test_unknown_revision_and_wrong_folder_are_clear_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert tool.main(["--rev", "HEAD"]) == 1
    assert "no dvc.yaml" in capsys.readouterr().err
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert tool.main(["--rev", "no-such-branch"]) == 1
    err = capsys.readouterr().err
    assert "unknown git revision 'no-such-branch'" in err and "git fetch origin" in err
    assert not (tmp_path / "report").exists()


def test_make_report_runs_the_tool_with_rev() -> None:
    out = subprocess.run(["make", "-n", "-o", "setup", "report", "REV=origin/main"], cwd=ROOT,
                         capture_output=True, text=True)
    assert "tools.report --rev origin/main" in out.stdout, out.stdout + out.stderr
    default = subprocess.run(["make", "-n", "-o", "setup", "report"], cwd=ROOT, capture_output=True, text=True)
    assert "--rev HEAD" in default.stdout, default.stdout + default.stderr


# --- the pull-request workflow ------------------------------------------------------------------

WORKFLOW = ROOT / ".github" / "workflows" / "pr-report.yml"


def test_pr_workflow_is_valid_and_calls_only_project_commands() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text())
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on:` key as True
    assert "pull_request" in triggers
    (job,) = wf["jobs"].values()
    steps = job["steps"]
    uses = {s["uses"].split("@")[0]: s for s in steps if "uses" in s}
    assert uses["actions/checkout"]["with"]["fetch-depth"] == 0  # the base branch, for REV
    assert str(uses["actions/setup-python"]["with"]["python-version"]) == "3.11"
    assert "iterative/setup-cml" in uses
    script = "\n".join(s.get("run", "") for s in steps)
    order = ["make setup", "dvc pull", "make repro", "make report REV=origin/${{ github.base_ref }}",
             "cml comment"]
    positions = [script.find(cmd) for cmd in order]
    assert -1 not in positions and positions == sorted(positions), dict(zip(order, positions))
    assert "pip install" not in script  # set up by the README's command only

    rules = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    called = set(re.findall(r"\bmake ([\w-]+)", script))
    assert called <= rules, f"workflow calls make targets the Makefile lacks: {called - rules}"
    secrets = set(re.findall(r"secrets\.(\w+)", WORKFLOW.read_text())) - {"GITHUB_TOKEN"}
    readme = (ROOT / "README.md").read_text()
    assert secrets and all(s in readme for s in secrets), f"README.md should explain secrets {secrets}"


def test_test_workflow_runs_the_readme_test_command_in_debian() -> None:
    """.github/workflows/tests.yml cannot run here; its shape can be checked: it runs on pull requests,
    as root in a Debian image (install-system-deps uses apt-get), with CI set and MNIST at
    MNIST_MIRROR, and calls nothing but `make test`, within CI's 90 minutes."""
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "tests.yml").read_text())
    triggers = wf.get("on", wf.get(True))
    assert "pull_request" in triggers
    (job,) = wf["jobs"].values()
    assert re.fullmatch(r"python:3\.11-(bookworm|trixie)", job["container"]), job["container"]
    assert job["timeout-minutes"] <= 90
    assert job["env"]["CI"] == "true" and "MNIST_MIRROR" in job["env"]
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert runs[-1].strip() == "make test"
    script = "\n".join(runs)
    assert "pip install" not in script and "pytest" not in script  # the README's command only
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
