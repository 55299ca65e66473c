"""The `dvc plots diff` page in a real headless Chromium: its figures and loss curves render.

DVC writes the figures as files beside the page (static/), but loads Vega, Vega-Lite and
Vega-Embed from cdn.jsdelivr.net, which test machines may not reach. So the test fetches exactly the
versions the page names from the npm registry (`npm pack`: the files jsDelivr serves) and points a
copy of the page at them; the copy is otherwise DVC's page, byte for byte. A probe script added to the copy
records each image's natural size, each chart's drawn marks and painted pixels, and any script error.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.test_report import declared_images, reviewed

CHROMIUM = Path("/usr/bin/chromium")
CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/((?:@[\w.-]+/)?[\w.-]+)@([\w.-]+)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1400,3000", "--virtual-time-budget=15000"]

# First in <head>: collect errors of every later script (e.g. "vegaEmbed is not defined").
CATCH = """<script>window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });</script>"""
# End of <head>, after the Vega scripts and before DVC's charts: keep each chart's promise.
WRAP = """<script>window.__embeds = [];
if (window.vegaEmbed) { var __embed = window.vegaEmbed;
  window.vegaEmbed = function () { var p = __embed.apply(this, arguments); window.__embeds.push(p); return p; }; }
</script>"""
# End of <body>: once everything has loaded and every chart has settled, write what rendered.
PROBE = """<pre id="probe"></pre><script>
function marks(node, acc) {
  if (!node) return acc;
  if (node.marktype) acc[node.marktype] = (acc[node.marktype] || 0) + (node.items || []).length;
  (node.items || []).forEach(function (item) { marks(item, acc); });
  return acc;
}
window.addEventListener('load', function () {
  Promise.allSettled(window.__embeds || []).then(function (results) {
    var charts = results.map(function (r) {
      if (r.status !== 'fulfilled') return {error: String(r.reason)};
      var canvas = r.value.view.container().querySelector('canvas');
      var painted = 0;
      if (canvas && canvas.width) {
        var px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        for (var i = 3; i < px.length; i += 4) if (px[i]) painted++;
      }
      return {id: r.value.view.container().closest('[id]').id, marks: marks(r.value.view.scenegraph().root, {}),
              width: canvas ? canvas.width : 0, painted: painted};
    });
    var images = Array.prototype.map.call(document.images, function (img) {
      return {src: img.getAttribute('src'), width: img.naturalWidth, height: img.naturalHeight};
    });
    document.getElementById('probe').textContent = JSON.stringify(
      {images: images, charts: charts, vega: !!window.vega, errors: window.__errors});
  });
});
</script>"""


@dataclass
class Rendered:
    project: Path         # the reviewed project
    page: Path            # DVC's index.html
    result: dict          # what the probe recorded
    screenshot: Path
    vega_missing: str     # why the Vega scripts could not be provided, or ""


def fetch_scripts(page_html: str, dest: Path) -> tuple[str, str]:
    """``page_html`` with each CDN script pointing at the same package version, packed from npm.

    Returns the new HTML and "" or, if npm could not provide them, the original HTML and why."""
    sources = re.findall(r'<script src="([^"]+)"', page_html)
    assert all(CDN.fullmatch(s) for s in sources), f"unexpected external scripts: {sources}"
    if not shutil.which("npm"):
        return page_html, "npm is not installed"
    dest.mkdir(parents=True, exist_ok=True)
    for src in sources:
        name, version = CDN.fullmatch(src).groups()
        pack = subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(dest), f"{name}@{version}"],
                              capture_output=True, text=True, timeout=300)
        if pack.returncode != 0:
            return page_html, f"`npm pack {name}@{version}` failed (offline?): {pack.stderr.strip()[-500:]}"
        with tarfile.open(dest / pack.stdout.strip().splitlines()[-1]) as tar:
            meta = json.load(tar.extractfile("package/package.json"))
            # What jsDelivr serves for /npm/<name>@<version>: the package's browser bundle.
            entry = meta.get("jsdelivr") or meta.get("unpkg") or meta["main"]
            script = dest / f"{name.replace('/', '_')}-{version}.js"
            script.write_bytes(tar.extractfile(f"package/{entry.lstrip('./')}").read())
        page_html = page_html.replace(f'"{src}"', f'"{script.as_uri()}"')
    return page_html, ""


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"  # a new, empty profile each run
    result = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Rendered:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `tools/install-chromium` installs Debian's package "
                    "(needs root and apt-get)")
    proj = reviewed(tmp_path_factory, mnist_dir)
    tmp = tmp_path_factory.mktemp("browser")
    out = tmp / "plots"
    proj.dvc("plots", "diff", "HEAD", "-o", str(out))
    page = out / "index.html"

    # The probed copy sits beside DVC's page, so its relative image paths resolve the same way.
    text, missing = fetch_scripts(page.read_text(), tmp / "vendor")
    text = text.replace("<head>", "<head>\n" + CATCH, 1).replace("</head>", WRAP + "\n</head>", 1)
    text = text.replace("</body>", PROBE + "\n</body>", 1)
    probed = out / "probed.html"
    probed.write_text(text)

    dom = chromium(tmp, "--dump-dom", probed.as_uri()).stdout
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert match and match.group(1), f"the probe did not report (page never finished loading?):\n{dom[-2000:]}"
    shot = tmp / "screenshot.png"
    chromium(tmp, f"--screenshot={shot}", probed.as_uri())
    return Rendered(proj.path, page, json.loads(html.unescape(match.group(1))), shot, missing)


@pytest.mark.slow
def test_chromium_loads_every_figure_of_the_plots_page(rendered: Rendered) -> None:
    images = rendered.result["images"]
    expected = len(re.findall(r"<img ", rendered.page.read_text()))
    assert expected >= len(declared_images(rendered.project)) > 0
    assert len(images) == expected
    assert all(img["width"] > 0 and img["height"] > 0 for img in images), images

    with Image.open(rendered.screenshot) as shot:
        assert shot.size == (1400, 3000)
        low, high = zip(*shot.convert("RGB").getextrema())
        assert low != high, "the screenshot is one flat colour"
    print(f"screenshot: {rendered.screenshot}")


@pytest.mark.slow
def test_chromium_draws_the_loss_curves(rendered: Rendered) -> None:
    if rendered.vega_missing:
        pytest.skip(f"the page loads Vega from cdn.jsdelivr.net; offline, and {rendered.vega_missing}")
    result = rendered.result
    assert result["vega"] and not result["errors"], result["errors"]
    plots = yaml.safe_load((rendered.project / "dvc.yaml").read_text())["plots"]
    curves = [d["y"] for p in plots if isinstance(p, dict)
              for d in p.values() if isinstance(d, dict) and isinstance(d.get("y"), dict)]
    assert len(result["charts"]) == len(curves) > 0, result["charts"]
    assert all("error" not in chart for chart in result["charts"]), result["charts"]
    # Each chart drew a line for every column it plots, at both revisions, on a painted canvas.
    series = sorted(2 * sum(len(cols) for cols in y.values()) for y in curves)
    drawn = sorted(chart["marks"].get("line", 0) for chart in result["charts"])
    assert all(d >= s for d, s in zip(drawn, series)), (drawn, series, result["charts"])
    assert all(c["width"] > 0 and c["painted"] > 0 for c in result["charts"]), result["charts"]
