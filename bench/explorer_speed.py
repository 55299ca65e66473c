"""Milliseconds per decode and per encode in the latent explorer page, in headless Chromium.

    python -m bench.explorer_speed [--page artifacts/explorer/index.html] [--repeats 2000]

A probe injected into a copy of the page (tools/explorer_browser.py) times the page's own
JavaScript networks (performance.now(), real time): for each model, ``repeats`` decodes of random latent points
(784 pixels out: the work of one animation frame under the pointer) and ``repeats // 4`` encodes
of test images, after a warm-up. It reports the median over 5 batches, so the shared machine's
drift and the JIT's first calls weigh little. Decoding the interpolation strip costs its steps
times one decode.
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

from tools import explorer_browser as browser

PROBE = """<pre id="probe"></pre><script>
(function () {
  var ex = window.explorer, N = %d, out = [];
  function median(a) { a = a.slice().sort(function (x, y) { return x - y; }); return a[a.length >> 1]; }
  var images = []; for (var i = 0; i < 16; i++) images.push(ex.testImage(i));
  ex.models.forEach(function (m) {
    var e = m.extent, sink = 0, dec = [], enc = [];
    function z(k) { return [e[0] + (e[1] - e[0]) * ((k * 0.618034) %% 1), e[2] + (e[3] - e[2]) * ((k * 0.414214) %% 1)]; }
    for (var k = 0; k < 200; k++) { var p = z(k); sink += ex.decodeRaw(m.id, p[0], p[1], k %% 10)[300]; }
    for (var b = 0; b < 5; b++) {
      var t0 = performance.now();
      for (var k = 0; k < N; k++) { var p = z(k); sink += ex.decodeRaw(m.id, p[0], p[1], k %% 10)[300]; }
      dec.push((performance.now() - t0) / N);
      var n = Math.max(1, N >> 2), t1 = performance.now();
      for (var k = 0; k < n; k++) sink += ex.encode(m.id, images[k %% 16], k %% 10)[m.kind === 'ae' ? 'z' : 'z_mean'][0];
      enc.push((performance.now() - t1) / n);
    }
    out.push({id: m.id, label: m.label, decode_ms: median(dec), encode_ms: median(enc), sink: sink});
  });
  document.getElementById('probe').textContent = JSON.stringify({results: out, ua: navigator.userAgent, errors: window.__errors});
})();
</script>"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--page", type=Path, default=Path("artifacts/explorer/index.html"))
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    if not args.page.exists():
        raise SystemExit(f"{args.page}: not found (build it: dvc repro explore)")
    with tempfile.TemporaryDirectory(prefix="explorer-bench-") as tmp:
        result = browser.probe(args.page.resolve(), PROBE % args.repeats, Path(tmp))
    if result["errors"]:
        raise SystemExit(f"the page reported errors: {result['errors']}")
    version = re.search(r"Chrome/(\S+)", result["ua"])
    print(f"Chromium {version.group(1) if version else '?'} headless, {os.cpu_count()} cores; median of 5 batches "
          f"of {args.repeats} decodes and of {max(1, args.repeats // 4)} encodes")
    print(f"{'model':32} {'decode (ms)':>12} {'encode (ms)':>12}")
    for r in result["results"]:
        print(f"{r['label']:32} {r['decode_ms']:12.4f} {r['encode_ms']:12.4f}")


if __name__ == "__main__":
    main()
