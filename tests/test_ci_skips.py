"""tests/conftest.py: with CI set, a skipped test fails the run and its reason is printed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SKIPPING = '''
import pytest

@pytest.fixture
def browser():
    pytest.skip("no Chromium at /usr/bin/chromium")

def test_in_fixture(browser):
    pass

def test_in_body():
    pytest.skip("npm is not installed")

@pytest.mark.skip(reason="by mark")
def test_marked():
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

def test_passes():
    pass
'''


def run_suite(tmp_path: Path, ci: str | None, files: dict[str, str]) -> subprocess.CompletedProcess:
    """pytest on ``files`` in a folder holding a copy of the project's conftest.py."""
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_every_skip_fails_with_its_reason(tmp_path: Path, ci: str) -> None:
    result = run_suite(tmp_path, ci, {"test_some.py": SKIPPING})
    out = result.stdout
    assert result.returncode == 1, out
    assert "skips turned into failures (CI is set)" in out, out
    summary = out.split("skips turned into failures (CI is set)")[1]
    for nodeid, reason in [("test_in_fixture", "no Chromium at /usr/bin/chromium"),
                           ("test_in_body", "npm is not installed"), ("test_marked", "by mark")]:
        assert f"test_some.py::{nodeid}: {reason}" in summary, out
    assert "1 passed" in out and "1 xfailed" in out and " skipped" not in out.splitlines()[-1], out


def test_in_ci_a_module_skipped_at_import_fails(tmp_path: Path) -> None:
    module = 'import pytest\npytest.importorskip("no_such_module_here")\n\ndef test_x():\n    pass\n'
    result = run_suite(tmp_path, "true", {"test_mod.py": module})
    assert result.returncode != 0, result.stdout
    assert "no_such_module_here" in result.stdout.split("skips turned into failures")[1], result.stdout


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_outside_ci_skips_stay_skips(tmp_path: Path, ci: str | None) -> None:
    result = run_suite(tmp_path, ci, {"test_some.py": SKIPPING})
    assert result.returncode == 0, result.stdout
    assert "3 skipped" in result.stdout and "turned into failures" not in result.stdout, result.stdout
