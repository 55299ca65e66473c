"""Run a `dvc` command (default: `dvc repro`) and print how long each stage took.

docs/speed.md's per-stage timings come from this: `python -m tools.stage_times [dvc args...]`. A stage's time
runs from DVC's "Running stage" (or "cached - skipping run", or "didn't change") line to the
next stage's line, so it includes the stage's Python start and DVC's hashing of its outputs.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time

STAGE_LINE = re.compile(r"(?:Running stage|Stage) '([^']+)'(.*)")


def main(argv: list[str]) -> int:
    cmd = [sys.executable, "-m", "dvc", *(argv or ["repro"])]
    start = time.perf_counter()
    spans: list[tuple[str, str, float]] = []  # (stage, what DVC did, start time)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            match = STAGE_LINE.search(line)
            if match:
                rest = match.group(2)
                what = ("restored" if "cached - skipping" in rest else "unchanged" if "didn't change" in rest
                        else "ran")
                spans.append((match.group(1), what, time.perf_counter()))
    end = time.perf_counter()
    print(f"\n{'stage':<22} {'what':<10} {'seconds':>8}")
    for i, (stage, what, t0) in enumerate(spans):
        t1 = spans[i + 1][2] if i + 1 < len(spans) else end
        print(f"{stage:<22} {what:<10} {t1 - t0:8.1f}")
    print(f"{'total':<22} {'':<10} {end - start:8.1f}  (exit {proc.returncode})")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
