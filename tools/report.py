"""Review a change: the workspace against a git revision, as Markdown for a pull-request comment.

    python -m tools.report --rev origin/main --out report      # or: make report REV=origin/main

Writes, under --out (``report/``, git-ignored):
  report.md         the `dvc params diff`, the `dvc metrics diff` with deltas, and the figures that
                    changed, old and new side by side
  figures/          the old and new version of each changed figure, linked from report.md
  plots/index.html  the page `dvc plots diff` renders: the loss curves (Vega) and every figure

Everything comes from the real `git` and `dvc` CLIs, run in the current directory (the project
root). Figures are the image files declared as plots in dvc.yaml (under a stage's ``plots:``, foreach
resolved, or the top-level ``plots:``), compared byte for byte with their version in git at --rev:
they must be tracked by git (``cache: false``), as this project's are.
"""
from __future__ import annotations

import argparse
import json
import math
import posixpath
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from stages.lib.files import write_bytes, write_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")
WORKSPACE = "workspace"


class ReportError(Exception):
    """A command or file the report needs failed; the message says which and why."""


def _run(cmd: Sequence[str]) -> str:
    result = subprocess.run(list(cmd), capture_output=True, text=True)
    if result.returncode != 0:
        raise ReportError(f"`{' '.join(cmd)}` failed ({result.returncode}):\n"
                          f"{(result.stderr or result.stdout).strip()[-3000:]}")
    return result.stdout


def _dvc(*args: str) -> str:
    # This interpreter's dvc: the venv's, whatever PATH holds.
    return _run([sys.executable, "-m", "dvc", *args])


def _git_show(rev: str, path: str) -> bytes | None:
    """The bytes of ``path`` (relative to the current directory) at ``rev``; None if absent there."""
    result = subprocess.run(["git", "show", f"{rev}:./{path}"], capture_output=True)
    return result.stdout if result.returncode == 0 else None


def resolve(rev: str) -> str:
    """The commit ``rev`` names, or a ReportError saying how to get it."""
    result = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ReportError(f"unknown git revision {rev!r}; for a pull request's base branch, "
                          f"fetch it first (e.g. `git fetch origin main`, then REV=origin/main)")
    return result.stdout.strip()


# --- formatting ---------------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_value(v: Any) -> str:
    """A metric value for a table cell: up to 7 significant digits, "—" when absent."""
    if v is None:
        return "—"
    if isinstance(v, float) and not isinstance(v, bool):
        return f"{v:.7g}"
    return _cell(json.dumps(v) if isinstance(v, (list, dict)) else str(v))


def fmt_delta(old: Any, new: Any) -> tuple[str, str]:
    """The change from ``old`` to ``new``: signed absolute and relative, "—" when not numeric."""
    if not (_is_number(old) and _is_number(new)):
        return "—", "—"
    delta = new - old
    rel = f"{100 * delta / abs(old):+.2f}%" if old else "—"
    return f"{delta:+.4g}", rel


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --- params and metrics -------------------------------------------------------------------------

def params_section(rev: str) -> str:
    table = _dvc("params", "diff", rev, "--md").strip()
    return (table + "\n") if table else "No param changed.\n"


@dataclass(frozen=True)
class Metric:
    path: str
    name: str
    old: Any
    new: Any

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def nested(self) -> bool:
        """Deeply nested keys (e.g. per-digit statistics) are details, folded away in the report."""
        return self.name.count(".") > 1


def metrics(rev: str) -> list[Metric]:
    """Every metric of the workspace or ``rev``, from `dvc metrics diff --all --json`."""
    raw = json.loads(_dvc("metrics", "diff", rev, "--all", "--json") or "{}")
    return sorted((Metric(path, name, v.get("old"), v.get("new"))
                   for path, values in raw.items() for name, v in values.items()),
                  key=lambda m: (m.path, m.name))


def metrics_section(rev: str, found: list[Metric]) -> str:
    changed = [m for m in found if m.changed]
    if not found:
        return "No metrics declared in dvc.yaml.\n"
    if not changed:
        return f"No metric changed ({len(found)} compared).\n"
    header = ["File", "Metric", f"`{rev}`", WORKSPACE, "Change", "Change %"]

    def rows(ms: list[Metric]) -> list[list[str]]:
        return [[f"`{m.path}`", f"`{m.name}`", fmt_value(m.old), fmt_value(m.new),
                 *fmt_delta(m.old, m.new)] for m in ms]

    main = [m for m in changed if not m.nested]
    nested = [m for m in changed if m.nested]
    text = f"{len(changed)} of {len(found)} metrics changed.\n\n"
    if main:
        text += _table(header, rows(main))
    if nested:
        text += (f"\n<details><summary>{len(nested)} more changed metrics (nested keys)</summary>\n\n"
                 + _table(header, rows(nested)) + "\n</details>\n")
    return text


# --- figures ------------------------------------------------------------------------------------

def _top_level_images(entries: Sequence[Any], base: str) -> list[str]:
    """The image files named in a dvc.yaml's top-level ``plots:`` list, relative to the project root."""
    names: list[str] = []
    for entry in entries or []:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, dict):
            for key, props in entry.items():
                names.append(str(key))
                # `y: {file: columns}` names files; `y: column` does not.
                if isinstance(props, dict) and isinstance(props.get("y"), dict):
                    names.extend(str(f) for f in props["y"])
    return [posixpath.normpath(posixpath.join(base, n)) for n in names if n.lower().endswith(IMAGE_SUFFIXES)]


def plot_images(rev: str | None = None) -> list[str]:
    """The image files declared as plots in the project's dvc.yaml files, in the workspace
    (``rev`` None) or at git revision ``rev``: each stage's ``plots:`` outputs, ``foreach``
    resolved, then any top-level ``plots:``. Read by DVC itself, so they are what `dvc plots`
    renders. Paths relative to the project root, in order, each once."""
    from dvc.repo import Repo

    if rev is not None and _git_show(rev, "dvc.yaml") is None:
        return []  # no pipeline at that revision (yet): nothing declared there
    found: list[str] = []
    try:
        with Repo(".", rev=rev) as repo:
            index = repo.index
            names = [repo.fs.relpath(out.fs_path, repo.root_dir) for out in index.outs if out.plot]
            for dvcfile, entries in index._plots.items():  # top-level plots, by the file declaring them
                base = posixpath.dirname(repo.fs.relpath(dvcfile, repo.root_dir)) if dvcfile else ""
                names += _top_level_images(entries, "" if base == "." else base)
    except Exception as e:  # a broken or unreadable dvc.yaml at either side: say which
        raise ReportError(f"could not read the plots of dvc.yaml at {rev or WORKSPACE}: {e}") from e
    found.extend(n for n in names if n.lower().endswith(IMAGE_SUFFIXES) and n not in found)
    return found


@dataclass(frozen=True)
class Figure:
    path: str
    old: bytes | None
    new: bytes | None

    @property
    def status(self) -> str:
        if self.old is None and self.new is None:
            return "missing"
        if self.old is None:
            return "added"
        if self.new is None:
            return "removed"
        return "unchanged" if self.old == self.new else "changed"


def figures(rev: str) -> list[Figure]:
    """Each figure declared in dvc.yaml (workspace or ``rev``): its bytes at ``rev`` and now."""
    paths = plot_images()
    paths += [p for p in plot_images(rev) if p not in paths]
    return [Figure(p, _git_show(rev, p), Path(p).read_bytes() if Path(p).is_file() else None)
            for p in paths]


def figures_section(rev: str, found: list[Figure], out: Path) -> str:
    """The changed figures side by side, their files copied to ``out``/figures/."""
    shown = [f for f in found if f.status in ("changed", "added", "removed")]
    text = f"{len(shown)} of {len(found)} figures changed (compared byte for byte with `{rev}`).\n"
    if shown:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        rows = []
        for f in shown:
            stem = f.path.replace("/", "__").rsplit(".", 1)
            cells = []
            for label, data, tag in ((rev, f.old, "old"), (WORKSPACE, f.new, "new")):
                if data is None:
                    cells.append("*(absent)*")
                    continue
                name = f"{stem[0]}.{tag}.{stem[1]}"
                write_bytes(out / "figures" / name, data)
                # Markdown images, not <img>: CML uploads only these when it posts the comment.
                cells.append(f"![{label.replace('[', '').replace(']', '')}](figures/{name})")
            rows.append([f"`{f.path}`", *cells])
        text += "\n" + _table(["Figure", f"`{rev}`", WORKSPACE], rows)
    for status, label in (("unchanged", "Unchanged"), ("missing", "Missing in both (not reproduced?)")):
        names = [f"`{f.path}`" for f in found if f.status == status]
        if names:
            text += f"\n{label}: {', '.join(names)}.\n"
    return text


# --- the report ---------------------------------------------------------------------------------

def _status_line(rev: str, base: str) -> str:
    head = _run(["git", "rev-parse", "--short", "HEAD"]).strip()
    dirty = bool(_run(["git", "status", "--porcelain", "--untracked-files=no"]).strip())
    stale = sorted(json.loads(_dvc("status", "--json") or "{}"))
    line = (f"Base `{rev}` = `{base[:8]}`; {WORKSPACE} = `{head}`"
            + (" with uncommitted changes" if dirty else "") + ".")
    if stale:
        line += (f"\n\n> **Not reproduced:** `dvc status` lists {', '.join(f'`{s}`' for s in stale)}, "
                 "so the metrics and figures below may not match the params. Run `make repro`.")
    else:
        line += " Pipeline up to date (`dvc status`)."
    return line + "\n"


def write_report(rev: str, out: Path) -> Path:
    """Writes ``out``/report.md, ``out``/figures/ and ``out``/plots/ for the workspace against ``rev``."""
    if not Path("dvc.yaml").is_file():
        raise ReportError(f"no dvc.yaml in {Path.cwd()}: run from the project root")
    base = resolve(rev)
    out.mkdir(parents=True, exist_ok=True)
    # Only what this tool writes is cleared, so a stale figure can never be shown as current.
    for old in (out / "figures", out / "plots"):
        shutil.rmtree(old, ignore_errors=True)

    plots_dir = out / "plots"
    _dvc("plots", "diff", rev, "-o", str(plots_dir))
    page = plots_dir / "index.html"
    plots_text = (
        f"Loss curves and every figure, `{rev}` and {WORKSPACE}: open `{page}` "
        "(written by `dvc plots diff`; its Vega charts load from cdn.jsdelivr.net, so view it online)."
        if page.is_file() else "`dvc plots diff` found no plots to render.")

    sections = [
        f"## Pipeline report: {WORKSPACE} vs `{rev}`\n\n" + _status_line(rev, base),
        "### Params\n\n" + params_section(rev),
        "### Metrics\n\n" + metrics_section(rev, metrics(rev)),
        "### Figures\n\n" + figures_section(rev, figures(rev), out),
        "### Interactive plots\n\n" + plots_text + "\n",
        f"<sub>Generated by `make report REV={rev}` (tools/report.py).</sub>\n",
    ]
    report = out / "report.md"
    write_text(report, "\n".join(sections))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.report", description=__doc__.split("\n")[0])
    parser.add_argument("--rev", default="HEAD", help="git revision to compare with (default: HEAD)")
    parser.add_argument("--out", default=Path("report"), type=Path,
                        help="folder for report.md, figures/ and plots/ (default: report)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.rev, args.out)
    except ReportError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 1
    print(f"report: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
