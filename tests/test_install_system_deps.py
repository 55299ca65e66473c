"""tools/install-system-deps: quiet when chromium, qemu-user and a C compiler are there; otherwise
installs them, or exits non-zero saying why it cannot (so `make test` stops instead of the tests
skipping)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "tools" / "install-system-deps"
CHROMIUM = Path("/usr/bin/chromium")


def run_with(tmp_path: Path, programs: dict[str, str]) -> subprocess.CompletedProcess:
    """The script with PATH holding only bash and ``programs`` (name: shell script body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash",):
        (bin_dir / name).symlink_to(shutil.which(name))
    for name, body in programs.items():
        (bin_dir / name).write_text(f"#!{shutil.which('bash')}\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return subprocess.run([shutil.which("bash"), str(SCRIPT)], env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, timeout=60)


def test_without_apt_get_it_fails_naming_the_package(tmp_path: Path) -> None:
    result = run_with(tmp_path, {"id": "echo 0"})  # root, but no qemu-x86_64 and no apt-get
    assert result.returncode == 1
    assert "qemu-user" in result.stderr and "no apt-get" in result.stderr, result.stderr


def test_without_root_it_fails_naming_the_package(tmp_path: Path) -> None:
    result = run_with(tmp_path, {"id": "echo 1000", "apt-get": "exit 0"})
    assert result.returncode == 1
    assert "qemu-user" in result.stderr and "needs root" in result.stderr, result.stderr


def test_a_failing_apt_get_fails(tmp_path: Path) -> None:
    result = run_with(tmp_path, {"id": "echo 0", "apt-get": "echo 'E: Unable to locate package' >&2; exit 100"})
    assert result.returncode == 1
    assert "apt-get could not install them" in result.stderr and "E: Unable" in result.stderr, result.stderr


def test_quiet_and_successful_when_all_are_present(tmp_path: Path) -> None:
    result = run_with(tmp_path, {"id": "echo 1000", "qemu-x86_64": "exit 0", "cc": "exit 0"})
    lacking = [name for name, path in (("chromium", CHROMIUM), ("libc6-dev", Path("/usr/include/dlfcn.h")))
               if not path.exists()]
    if not lacking:
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    else:  # this machine lacks one: still named, never a silent pass
        assert result.returncode == 1 and all(name in result.stderr for name in lacking), result.stderr
    assert os.access(SCRIPT, os.X_OK)
