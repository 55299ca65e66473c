"""Stage fetch: download and verify MNIST, write data/mnist.npz (uint8, no pickles)."""
from __future__ import annotations

from pathlib import Path

from stages.lib import mnist, params, run
from stages.lib.files import write_npz

OUT = Path("data/mnist.npz")
CACHE = Path("data/downloads")  # verified .gz files; not a DVC output, so reruns skip the download


def main() -> None:
    p = params.load("fetch", params.FetchParams)
    arrays = mnist.fetch(p.mirrors, CACHE, p.timeout, p.retries)
    write_npz(OUT, arrays)
    print(f"fetch: wrote {OUT} ({', '.join(f'{k} {v.shape}' for k, v in sorted(arrays.items()))})")


if __name__ == "__main__":
    run(main, compute=False)
