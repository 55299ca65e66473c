"""The comparison with Davidson et al. 2018 (docs/paper.md), as a Markdown table, from the paper pipeline's
committed results (artifacts/paper/<model>-<seed>/likelihood.json and metrics.json):

    python -m tools.paper_table          # make paper prints it at the end

One row per model of paper.models (mean over its seeds, ± the standard deviation over seeds when there
are several), beside Table 1's N-VAE, d = 2, in the paper's signs: LL (IWAE, 500 samples), L[q], RE, KL,
and the two columns no published table has: the exact LL (quadrature) and its gap to the IWAE-500.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from stages.lib.paper import OUT, PUBLISHED

COLUMNS = ("LL", "L[q]", "RE", "KL", "LL_exact")


def results(root: Path = OUT) -> dict[str, list[dict]]:
    """Each model's runs, by seed: its ``paper`` block (likelihood.json) and its training metrics."""
    runs: dict[str, list[dict]] = {}
    for likelihood in sorted(root.glob("*-*/likelihood.json")):
        model, seed = likelihood.parent.name.rsplit("-", 1)
        metrics_file = likelihood.parent / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        runs.setdefault(model, []).append({"seed": int(seed), **json.loads(likelihood.read_text())["paper"],
                                           "best_epoch": metrics.get("best_epoch"),
                                           "epochs_run": metrics.get("epochs_run")})
    return {m: sorted(r, key=lambda run: run["seed"]) for m, r in runs.items()}


def _cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def table(runs: dict[str, list[dict]]) -> str:
    """The Markdown table: the published row, then ours."""
    lines = ["| model | seeds | LL (IWAE-500) | L[q] | RE | KL | exact LL (quadrature) | exact − IWAE-500 "
             "| best epoch / run |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
             "| Davidson et al. 2018, N-VAE, d = 2 (mean of 10 runs) | – | "
             + " | ".join(f"{PUBLISHED[c]:.2f}" for c in COLUMNS[:4]) + " | – | – | – |"]
    for model, rs in runs.items():
        cells = [_cell([r[c] for r in rs]) for c in COLUMNS]
        gap = _cell([r["LL_exact"] - r["LL"] for r in rs])
        epochs = ", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in rs)
        lines.append(f"| ours, {model} | {', '.join(str(r['seed']) for r in rs)} | " + " | ".join(cells)
                     + f" | {gap} | {epochs} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=OUT, help="the paper pipeline's folder (artifacts/paper)")
    args = parser.parse_args(argv)
    runs = results(args.root)
    if not runs:
        print(f"paper_table: no results under {args.root} (run: make paper)", file=sys.stderr)
        return 1
    print(table(runs), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
