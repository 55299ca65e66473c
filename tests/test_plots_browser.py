"""The `dvc plots diff` page in a real headless Chromium: its figures and loss curves render.

DVC writes the figures as files beside the page (static/), but loads Vega, Vega-Lite and
Vega-Embed from cdn.jsdelivr.net, which test machines may not reach. So the project keeps exactly the
files the page names under tests/fixtures/vega/ (what jsDelivr serves for /npm/<name>@<version>: the
package's browser bundle, its `jsdelivr` entry, taken once from `npm pack <name>@<version>`), pinned
by sha256 below, and the test points a copy of the page at them; the copy is otherwise DVC's page,
byte for byte. No network and no npm at test time. A probe script added to the copy
records each image's natural size, each chart's drawn marks and painted pixels, and any script error.
"""
from __future__ import annotations

import hashlib
import html
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.conftest import ROOT, reviewed
from tests.test_report import declared_images

CHROMIUM = Path("/usr/bin/chromium")
VENDORED = ROOT / "tests" / "fixtures" / "vega"
# The scripts DVC's page (dvc-render) names, as tests/fixtures/vega/<name>@<version>.js, and the
# sha256 of each: vega build/vega.min.js, vega-lite build/vega-lite.min.js, vega-embed
# build/vega-embed.min.js, each from its npm package (BSD-3-Clause, see tests/fixtures/vega/README.md).
PINNED = {
    "vega@5.20.2": "4794d0169cb1f3ebad8117fe98ba5bd652dd725905ec0384e832391dbccb03be",
    "vega-lite@5.2.0": "d73157451b3978015ab31dacd55ff90d986ab8663fc0abed50f97b3cd90002cb",
    "vega-embed@6.18.2": "1ba9826431ddc9805e815ad92acc811c819f2bfd32bda2a128b8c4b5070fab5e",
}
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


def vendored_scripts(page_html: str) -> str:
    """``page_html`` with each CDN script pointing at its vendored copy, checked by sha256 first."""
    sources = re.findall(r'<script src="([^"]+)"', page_html)
    assert all(CDN.fullmatch(s) for s in sources), f"unexpected external scripts: {sources}"
    named = {"@".join(CDN.fullmatch(s).groups()): s for s in sources}
    assert set(named) == set(PINNED), (
        f"DVC's page now loads {sorted(named)}, the test vendors {sorted(PINNED)}: put each under "
        f"{VENDORED} (`npm pack <name>@<version>`, its `jsdelivr` file) and pin its sha256 in PINNED")
    for spec, src in named.items():
        script = VENDORED / f"{spec}.js"
        assert script.is_file(), f"{script} is missing (see PINNED)"
        digest = hashlib.sha256(script.read_bytes()).hexdigest()
        assert digest == PINNED[spec], f"{script}: sha256 {digest}, pinned {PINNED[spec]}"
        page_html = page_html.replace(f'"{src}"', f'"{script.as_uri()}"')
    return page_html


def declared_curves(project: Path) -> list[dict]:
    """The stages' plots with x and y (the history and evolution TSVs), foreach resolved: each is one chart."""
    curves = []
    for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].values():
        items, body = (stage["foreach"], stage["do"]) if "foreach" in stage else ([None], stage)
        for item in items:  # a list foreach names ${item}; a mapping one names ${key}
            for entry in body.get("plots") or []:
                if isinstance(entry, dict):
                    (name, props), = entry.items()
                    if isinstance(props, dict) and "y" in props:
                        name = name.replace("${key}" if isinstance(items, dict) else "${item}", str(item))
                        assert "${" not in name, name
                        curves.append({"path": name, **props})
    return curves


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"  # a new, empty profile each run
    result = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Rendered:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `tools/install-system-deps` installs Debian's package "
                    "(needs root and apt-get)")
    proj = reviewed(tmp_path_factory, mnist_dir)
    tmp = tmp_path_factory.mktemp("browser")
    out = tmp / "plots"
    proj.dvc("plots", "diff", "HEAD", "-o", str(out))
    page = out / "index.html"

    # The probed copy sits beside DVC's page, so its relative image paths resolve the same way.
    text = vendored_scripts(page.read_text())
    text = text.replace("<head>", "<head>\n" + CATCH, 1).replace("</head>", WRAP + "\n</head>", 1)
    text = text.replace("</body>", PROBE + "\n</body>", 1)
    probed = out / "probed.html"
    probed.write_text(text)

    dom = chromium(tmp, "--dump-dom", probed.as_uri()).stdout
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert match and match.group(1), f"the probe did not report (page never finished loading?):\n{dom[-2000:]}"
    shot = tmp / "screenshot.png"
    chromium(tmp, f"--screenshot={shot}", probed.as_uri())
    return Rendered(proj.path, page, json.loads(html.unescape(match.group(1))), shot)


@pytest.mark.slow
def test_chromium_loads_every_figure_of_the_plots_page(rendered: Rendered) -> None:
    # `dvc plots diff HEAD`: each image plot declared in dvc.yaml (read from the YAML, not from the
    # page) once per revision, the workspace's and HEAD's, and nothing else.
    images, declared = rendered.result["images"], declared_images(rendered.project)
    expected = {f"static/{rev}_{name.replace('/', '_')}" for rev in ("workspace", "HEAD") for name in declared}
    assert declared and sorted(img["src"] for img in images) == sorted(expected), [i["src"] for i in images]
    assert all(img["width"] > 0 and img["height"] > 0 for img in images), images

    with Image.open(rendered.screenshot) as shot:
        assert shot.size == (1400, 3000)
        low, high = zip(*shot.convert("RGB").getextrema())
        assert low != high, "the screenshot is one flat colour"
    print(f"screenshot: {rendered.screenshot}")


@pytest.mark.slow
def test_chromium_draws_the_loss_curves(rendered: Rendered) -> None:
    result = rendered.result
    assert result["vega"] and not result["errors"], result["errors"]
    curves = declared_curves(rendered.project)
    # Per model: its history and its spread by epoch (evolution.tsv).
    assert len(curves) == 6 and all(isinstance(c["y"], str) for c in curves), curves
    assert len(result["charts"]) == len(curves), result["charts"]
    assert all("error" not in chart for chart in result["charts"]), result["charts"]
    # One chart per declared history, in the element DVC names after the file (its id: the path
    # with the characters not valid in an HTML id as "_", as dvc-render writes it).
    html_id = {ord(c): "_" for c in r"!@#$%^&*()[]{};,<>?\/:.|`~=_+ "}
    ids = sorted(chart["id"] for chart in result["charts"])
    assert ids == sorted(c["path"].translate(html_id) for c in curves), ids
    # Each chart drew its one column at both revisions, on a painted canvas.
    assert all(chart["marks"].get("line", 0) >= 2 for chart in result["charts"]), result["charts"]
    assert all(c["width"] > 0 and c["painted"] > 0 for c in result["charts"]), result["charts"]


def test_vendored_vega_files_match_their_pins_and_the_page() -> None:
    """Fast: the vendored files are the pinned ones, and the versions are those DVC's page names."""
    from dvc_render.vega import VegaRenderer  # noqa: F401  (the page template lives beside it)
    import dvc_render.vega as vega_module

    page_template = Path(vega_module.__file__).read_text()
    named = {"@".join(m.groups()) for m in CDN.finditer(page_template)}
    assert named == set(PINNED), (named, set(PINNED))
    page = "".join(f'<script src="https://cdn.jsdelivr.net/npm/{spec}"></script>' for spec in sorted(PINNED))
    assert all(VENDORED.as_uri() in src for src in re.findall(r'<script src="([^"]+)"', vendored_scripts(page)))
