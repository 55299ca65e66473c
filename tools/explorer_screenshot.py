"""A PNG screenshot of the latent explorer at 1280x800 in headless Chromium, for the README.

    python -m tools.explorer_screenshot [--page artifacts/explorer/index.html] [--out docs/explorer.png]

A copy of the page gets a script that sets a state worth showing (the main VAE, the cursor on the
plane, an interpolation between two points, a test image encoded with its q(z|x) ellipses), then
Chromium takes the screenshot. The PNG is reduced to a 256-colour palette to stay small (< 500 KB).
Made by `make explorer-screenshot`, not by `dvc repro`: the figure is documentation.
"""
from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from PIL import Image

from stages.lib.files import write_bytes
from tools import explorer_browser as browser

MAX_BYTES = 500_000

SETUP = """<script>
window.__probe = new Promise(function (ready) { window.addEventListener('load', ready); }).then(function () {
  var ex = window.explorer, S = ex.state(), m = ex.models.filter(function (m) { return m.id === 'vae'; })[0] || ex.models[0];
  ex.setModel(m.id, false);
  var e = m.extent, w = e[1] - e[0], h = e[3] - e[2];
  var plane = document.getElementById('plane');
  function at(type, f) { var p = ex.latentToClient([e[0] + f[0] * w, e[2] + f[1] * h]);
    plane.dispatchEvent(new PointerEvent(type, {clientX: p[0], clientY: p[1], bubbles: true, pointerId: 3, pointerType: 'mouse'})); }
  at('pointerdown', [0.25, 0.3]); at('pointerup', [0.25, 0.3]);
  at('pointerdown', [0.75, 0.7]); at('pointerup', [0.75, 0.7]);
  ex.randomImage(%d);
  at('pointermove', [0.6, 0.45]);
  if (document.activeElement) document.activeElement.blur();
  return new Promise(function (done) { requestAnimationFrame(function () { requestAnimationFrame(done); }); });
});
</script>"""


def shoot(page: Path, out: Path, image: int = 3) -> int:
    with tempfile.TemporaryDirectory(prefix="explorer-shot-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(browser.inject(page.read_text(encoding="utf-8"), SETUP % image), encoding="utf-8")
        with browser.Browser() as chromium:
            chromium.open(copy.as_uri())
            chromium.evaluate("window.__probe.then(function () { return true; })")
            errors = chromium.evaluate("window.__errors")
            png = chromium.screenshot()
        if errors:
            raise SystemExit(f"the page reported errors: {errors}")
        with Image.open(io.BytesIO(png)) as shot:
            size = shot.size
            small = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    if size != (1280, 800):
        raise SystemExit(f"screenshot is {size}, expected 1280x800")
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    if buf.tell() > MAX_BYTES:
        raise SystemExit(f"screenshot is {buf.tell()} bytes, more than {MAX_BYTES}")
    write_bytes(out, buf.getvalue())
    return buf.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--page", type=Path, default=Path("artifacts/explorer/index.html"))
    parser.add_argument("--out", type=Path, default=Path("docs/explorer.png"))
    args = parser.parse_args()
    if not args.page.exists():
        raise SystemExit(f"{args.page}: not found (build it: dvc repro explore)")
    size = shoot(args.page.resolve(), args.out)
    print(f"{args.out} ({size / 1000:.0f} KB, 1280x800)")


if __name__ == "__main__":
    main()
