"""The latent explorer page (stage explore) in real headless Chromium: numbers and interaction.

The page is built by `dvc repro explore` in a copy of the tiny project (TINY params: models
trained for one epoch, which is all the page needs to be checked against Keras). Probe scripts
injected into copies of the page run its own decoder and encoder and dispatch real DOM events;
the results come back through --dump-dom (tools/explorer_browser.py). Nothing is mocked.
"""
from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Project, copy_of, tiny_base
from tools import explorer_browser as browser

PAGE = Path("artifacts/explorer/index.html")

# Fills #probe with the page's decodes and encodes of the given cases, as base64 float32.
NUMBERS_PROBE = """<pre id="probe"></pre><script>
(function () {
  var CASES = %s;
  function b64(f) {
    var u = new Uint8Array(f.buffer, f.byteOffset, f.byteLength), s = '';
    for (var i = 0; i < u.length; i += 0x8000) s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));
    return btoa(s);
  }
  var ex = window.explorer, out = {errors: window.__errors, models: ex.models.map(function (m) { return m.id; })};
  Object.keys(CASES).forEach(function (id) {
    var c = CASES[id], dec = new Float32Array(c.points.length * 784), enc = new Float32Array(c.images.length * 4);
    c.points.forEach(function (p, k) { dec.set(ex.decodeRaw(id, p[0], p[1], c.digits[k]), k * 784); });
    c.images.forEach(function (i, k) {
      var e = ex.encode(id, ex.testImage(i), c.image_digits[k]);
      enc.set(e.z ? e.z.concat([0, 0]) : e.z_mean.concat(e.z_log_var), k * 4);
    });
    out[id] = {decoded: b64(dec), encoded: b64(enc)};
  });
  document.getElementById('probe').textContent = JSON.stringify(out);
})();
</script>"""

# Dispatches pointer, wheel and keyboard events like a user, waiting for animation frames between
# them, and records what the page shows. %s: the latent targets, per model, chosen by the test.
INTERACTION_PROBE = """<pre id="probe"></pre><script>
(function () {
  var T = %s;
  function frames(n) { return new Promise(function (done) {
    (function next(k) { if (k === 0) done(); else requestAnimationFrame(function () { next(k - 1); }); })(n); }); }
  function pointer(el, type, x, y, extra) {
    var init = {clientX: x, clientY: y, bubbles: true, cancelable: true, pointerId: 7, pointerType: 'mouse',
                isPrimary: true, buttons: type === 'pointermove' || type === 'pointerup' ? 0 : 1};
    for (var k in (extra || {})) init[k] = extra[k];
    el.dispatchEvent(new PointerEvent(type, init));
  }
  function red(id) {
    var c = document.getElementById(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, out = [];
    for (var i = 0; i < d.length; i += 4) out.push(d[i]);
    return out;
  }
  function pick(sel, value) { var s = document.getElementById(sel); s.value = value; s.dispatchEvent(new Event('change', {bubbles: true})); }
  window.__probe = new Promise(function (ready) { window.addEventListener('load', ready); }).then(function () { return frames(2); }).then(async function () {
    var ex = window.explorer, S = ex.state(), plane = document.getElementById('plane'), R = {};
    R.resources = performance.getEntriesByType('resource').map(function (e) { return e.name; });
    R.violations_at_load = window.__violations.slice();
    R.title = document.querySelector('h1').textContent;
    R.models = Array.prototype.map.call(document.querySelectorAll('#model option'), function (o) { return o.value; });
    var rect = plane.getBoundingClientRect();
    R.plane = [rect.width, rect.height];

    // Hover: the decode under the pointer, at every frame.
    pick('model', 'vae'); await frames(1);
    var p = ex.latentToClient(T.hover);
    pointer(plane, 'pointermove', Math.round(p[0]), Math.round(p[1]));
    await frames(2);
    R.hover = {cursor: S.cursor.slice(), canvas: red('decode'), model: S.model.id};

    // Two clicks: an interpolation strip.
    [T.a, T.b].forEach(function (z) {
      var q = ex.latentToClient(z);
      pointer(plane, 'pointerdown', q[0], q[1]); pointer(plane, 'pointerup', q[0], q[1]);
    });
    await frames(2);
    var strip = document.getElementById('strip');
    R.strip = {picks: S.picks.map(function (z) { return z.slice(); }), width: strip.width,
               n: S.strip ? S.strip.length / 784 : 0, canvas: red('strip')};

    // A stroke on the pad: a code marker and, for the VAE, its ellipses.
    var pad = document.getElementById('pad'), r = pad.getBoundingClientRect();
    var path = [[0.5, 0.2], [0.5, 0.45], [0.52, 0.8]];
    path.forEach(function (f, k) { pointer(pad, k === 0 ? 'pointerdown' : 'pointermove', r.left + f[0] * r.width,
                                           r.top + f[1] * r.height, {buttons: 1}); });
    pointer(pad, 'pointerup', r.left + 0.52 * r.width, r.top + 0.8 * r.height);
    await frames(2);
    var zm = S.encoded && S.encoded.z_mean, at = zm ? ex.latentToClient(zm) : [0, 0];
    var px = plane.getContext('2d').getImageData(Math.round(at[0] - rect.left), Math.round(at[1] - rect.top), 1, 1).data;
    R.stroke = {encoded: S.encoded, ink: Array.prototype.reduce.call(S.pad, function (a, b) { return a + b; }, 0),
                input: Array.from(S.input), recon: red('recon'), marker_rgb: [px[0], px[1], px[2]],
                code_text: document.getElementById('code').textContent};

    // The beta slider keeps the view and the cursor.
    var view = JSON.stringify(S.view), cursor = S.cursor.slice(), beta = document.getElementById('beta');
    beta.value = String(+beta.value + 1); beta.dispatchEvent(new Event('input', {bubbles: true}));
    await frames(2);
    R.beta = {model: S.model.id, view_kept: JSON.stringify(S.view) === view,
              cursor: S.cursor.slice(), cursor_before: cursor, canvas: red('decode')};

    // The conditional VAE: the digit picker changes the decode.
    pick('model', 'cvae'); await frames(1);
    var c = ex.latentToClient(T.cvae);
    pointer(plane, 'pointermove', Math.round(c[0]), Math.round(c[1]));
    await frames(2);
    R.cvae = {cursor: S.cursor.slice(), before: red('decode'), digit_before: S.digit};
    document.querySelector('#digits input[value="' + T.digit + '"]').click();
    await frames(2);
    R.cvae.after = red('decode'); R.cvae.digit_after = S.digit;

    // Wheel zoom about the pointer, and the keyboard moving the cursor.
    var s0 = S.view.s;
    plane.dispatchEvent(new WheelEvent('wheel', {clientX: rect.left + rect.width / 2, clientY: rect.top + rect.height / 2,
                                                  deltaY: -200, bubbles: true, cancelable: true}));
    await frames(1);
    R.wheel = {before: s0, after: S.view.s};
    plane.focus();
    var k0 = S.cursor.slice();
    plane.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight', bubbles: true, cancelable: true}));
    plane.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowUp', bubbles: true, cancelable: true}));
    await frames(2);
    R.keys = {before: k0, after: S.cursor.slice(), canvas: red('decode'), focused: document.activeElement === plane};

    // The CSP blocks requests: one the probe itself attempts is refused and reported.
    R.errors = window.__errors.slice();
    R.violations_before_attempt = window.__violations.slice();
    var img = new Image(); img.src = 'http://127.0.0.1:9/blocked.png';
    try { await fetch('http://127.0.0.1:9/blocked.json'); R.fetch = 'allowed'; } catch (e) { R.fetch = 'blocked'; }
    await frames(2);
    R.violations_after_attempt = window.__violations.slice();
    R.frames = S.frames;
    document.getElementById('probe').textContent = JSON.stringify(R);
  }).catch(function (e) {
    document.getElementById('probe').textContent = JSON.stringify({fatal: String(e && e.stack || e), errors: window.__errors});
  });
})();
</script>"""


@dataclass
class Built:
    project: Path
    page: Path
    data: dict       # what the page embeds
    out: Path        # scratch folder for probed copies
    repo: Project    # the project copy, for dvc


def floats(b64: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<f4").reshape(shape)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Built:
    if not browser.CHROMIUM.exists():
        pytest.skip(f"no Chromium at {browser.CHROMIUM}: tools/install-system-deps installs it")
    base = tiny_base(tmp_path_factory, mnist_dir)
    proj = copy_of(base, tmp_path_factory.mktemp("explorer") / "project", mnist_dir)
    proj.dvc("repro", "explore")
    page = proj.path / PAGE
    status = proj.dvc("status", "explore").stdout
    assert "changed" not in status, status
    return Built(proj.path, page, browser.page_data(page.read_text(encoding="utf-8")),
                 tmp_path_factory.mktemp("explorer-pages"), proj)


@functools.lru_cache(maxsize=None)
def keras_models(project: Path, model_id: str):
    """The Keras encoder and decoder the page was built from."""
    from stages.lib import models
    folder = project / ("artifacts/beta_sweep/models/" + model_id if model_id.startswith("beta_")
                        else "artifacts/" + model_id)
    return models.load(folder / "encoder.keras"), models.load(folder / "decoder.keras")


def cases(data: dict) -> dict:
    """Per model: >= 100 latent points in the plotted extent (corners, a grid, random) and 20 far outside."""
    rng = np.random.default_rng(0)
    out = {}
    for m in data["models"]:
        x0, x1, y0, y1 = m["extent"]
        gx, gy = np.meshgrid(np.linspace(x0, x1, 5), np.linspace(y0, y1, 5))
        inside = np.concatenate([np.stack([gx.ravel(), gy.ravel()], 1),  # corners and a 5x5 grid
                                 rng.uniform([x0, y0], [x1, y1], size=(80, 2))])
        size = max(x1 - x0, y1 - y0)
        angle = rng.uniform(0, 2 * np.pi, 20)
        far = np.stack([np.cos(angle), np.sin(angle)], 1) * rng.uniform(5, 20, (20, 1)) * size
        points = np.concatenate([inside, far]).astype(np.float32)
        out[m["id"]] = {"points": points.tolist(), "n_inside": len(inside),
                        "digits": [k % 10 for k in range(len(points))],
                        "images": list(range(120)), "image_digits": []}
    return out


@pytest.mark.slow
def test_page_is_self_contained_and_small(built: Built) -> None:
    text = built.page.read_text(encoding="utf-8")
    assert built.page.stat().st_size <= 16 * 2**20
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text).group(1)
    assert "default-src 'none'" in csp and "connect-src" not in csp
    # No external references: no src/href attributes but the data: favicon, no URLs to fetch.
    assert re.findall(r'\b(?:src|href)="([^"]*)"', text) == ["data:,"]
    assert not re.search(r"https?://", text.split("const DATA")[0] + text.split("const DATA")[1].split("\n", 1)[1])
    ids = [m["id"] for m in built.data["models"]]
    assert ids == ["ae", "vae", "cvae", "beta_2"]  # TINY sweeps beta 2 only
    assert len(built.data["image_index"]) == 1000


@pytest.mark.slow
def test_page_is_byte_reproducible(built: Built) -> None:
    before = built.page.read_bytes()
    built.repo.dvc("repro", "-f", "-s", "explore")  # this stage only
    assert built.page.read_bytes() == before
    assert "changed" not in built.repo.dvc("status", "explore").stdout


@pytest.mark.slow
def test_embedded_codes_and_images_are_the_pipelines(built: Built) -> None:
    from stages.lib.files import load_npz
    mnist = load_npz(built.project / "data/mnist.npz", ["x_test", "y_test"])
    n = built.data["n_codes"]
    labels = np.frombuffer(base64.b64decode(built.data["labels"]), np.uint8)
    assert np.array_equal(labels, mnist["y_test"])
    index = np.array(built.data["image_index"])
    images = np.frombuffer(base64.b64decode(built.data["images"]), np.uint8).reshape(-1, 28, 28)
    assert np.array_equal(images, mnist["x_test"][index])
    for m in built.data["models"]:
        codes = floats(m["codes"], (n, 2))
        if m["id"] in ("ae", "vae", "cvae"):
            key = "z_test" if m["id"] == "ae" else "z_mean_test"
            assert np.array_equal(codes, load_npz(built.project / f"artifacts/{m['id']}/encodings.npz", [key])[key])


# Waits for ten animation frames of the unmodified page, then reports nothing but that it ran.
SETTLE = """Promise.all([new Promise(function (ready) {
  if (document.readyState === 'complete') ready(); else window.addEventListener('load', ready); })]).then(function () {
  return new Promise(function (done) { var n = 0; (function next() { if (++n > 10) done(!!window.explorer);
    else requestAnimationFrame(next); })(); }); })"""


@pytest.mark.slow
def test_page_loads_offline_with_no_request_and_no_console_message(built: Built) -> None:
    with browser.Browser() as chromium:
        chromium.open(built.page.as_uri())   # the page as the stage wrote it, nothing injected
        assert chromium.evaluate(SETTLE) is True
        assert chromium.evaluate("performance.getEntriesByType('resource').length") == 0
        assert chromium.evaluate("document.querySelectorAll('#model option').length") == len(built.data["models"])
        assert chromium.requests() == []
        assert chromium.console() == []


@pytest.mark.slow
def test_page_decodes_and_encodes_like_keras(built: Built) -> None:
    from stages.lib.files import load_npz
    from stages.lib.models import one_hot
    mnist = load_npz(built.project / "data/mnist.npz", ["x_test", "y_test"])
    index = np.array(built.data["image_index"])
    c = cases(built.data)
    for case in c.values():
        case["image_digits"] = [int(mnist["y_test"][index[i]]) for i in case["images"]]
    result = browser.probe(built.page, NUMBERS_PROBE % json.dumps(c), built.out, "numbers.html")
    assert result["errors"] == [] and result["models"] == list(c)
    for model_id, case in c.items():
        encoder, decoder = keras_models(built.project, model_id)
        points = np.array(case["points"], np.float32)
        conditional = model_id == "cvae"
        inputs = [points, one_hot(case["digits"])] if conditional else points
        expected = decoder.predict(inputs, verbose=0)
        got = floats(result[model_id]["decoded"], (len(points), 784))
        k = case["n_inside"]
        assert k >= 100
        inside, far = np.abs(got[:k] - expected[:k]).max(), np.abs(got[k:] - expected[k:]).max()
        assert inside <= 1e-5 and far <= 1e-4, (model_id, inside, far)

        x = mnist["x_test"][index[case["images"]]].reshape(-1, 784).astype(np.float32) / 255
        out = encoder.predict([x, one_hot(case["image_digits"])] if conditional else x, verbose=0)
        got = floats(result[model_id]["encoded"], (len(x), 4))
        assert len(x) >= 100
        if model_id == "ae":
            encoded = np.abs(got[:, :2] - out).max()
        else:  # z_mean, then z_log_var
            encoded = max(np.abs(got[:, :2] - out[0]).max(), np.abs(got[:, 2:] - out[1]).max())
        assert encoded <= 1e-4, (model_id, encoded)
        print(f"{model_id}: max |page - keras|: decode {inside:.1e} (far out {far:.1e}), encode {encoded:.1e}")


@pytest.mark.slow
def test_page_responds_to_pointer_pad_picker_wheel_and_keys(built: Built) -> None:
    from stages.lib.models import one_hot
    vae = next(m for m in built.data["models"] if m["id"] == "vae")
    x0, x1, y0, y1 = vae["extent"]
    mid = [(x0 + x1) / 2, (y0 + y1) / 2]
    targets = {"hover": [x0 + 0.3 * (x1 - x0), y0 + 0.6 * (y1 - y0)], "a": [x0 + 0.2 * (x1 - x0), mid[1]],
               "b": [x0 + 0.8 * (x1 - x0), mid[1]], "cvae": mid, "digit": 7}
    r = browser.probe(built.page, INTERACTION_PROBE % json.dumps(targets), built.out, "interaction.html")

    # Loads cleanly, fetches nothing, and its CSP refuses what the probe then tried to fetch.
    assert r["errors"] == [], r["errors"]
    assert r["_requests"] == ["http://127.0.0.1:9/blocked.png"]  # the probe's own attempt, refused
    assert r["resources"] == [] and r["violations_at_load"] == [] and r["violations_before_attempt"] == []
    blocked = {v["directive"] for v in r["violations_after_attempt"]}
    assert {"img-src", "connect-src"} <= blocked and r["fetch"] == "blocked", r["violations_after_attempt"]
    assert r["models"] == ["ae", "vae", "cvae", "beta_2"] and "Latent explorer" in r["title"]
    assert r["plane"] == [800, 500]

    def shown(canvas: list[int], model_id: str, z, digit: int | None = None) -> None:
        """The canvas shows the Keras decode of z, 8-bit (one level for rounding)."""
        _, decoder = keras_models(built.project, model_id)
        z = np.array([z], np.float32)
        expected = decoder.predict([z, one_hot([digit])] if digit is not None else z, verbose=0)[0]
        got = np.array(canvas)
        assert got.shape == (784,)
        assert np.abs(got - np.rint(255 * expected)).max() <= 1, model_id

    h = r["hover"]
    assert h["model"] == "vae"
    assert np.allclose(h["cursor"], targets["hover"], atol=2 / 100)   # within a pixel or so of the target
    shown(h["canvas"], "vae", h["cursor"])

    s = r["strip"]
    assert len(s["picks"]) == 2 and s["n"] == built.data["steps"] and s["width"] == 28 * s["n"]
    assert np.allclose(s["picks"][0], targets["a"], atol=1e-6) and np.allclose(s["picks"][1], targets["b"], atol=1e-6)
    strip = np.array(s["canvas"]).reshape(28, s["n"], 28).transpose(1, 0, 2).reshape(s["n"], 784)
    shown(strip[0], "vae", s["picks"][0])
    shown(strip[-1], "vae", s["picks"][1])

    st = r["stroke"]
    assert st["ink"] > 10 and st["encoded"]["z_mean"] and st["encoded"]["z_log_var"]
    encoder, _ = keras_models(built.project, "vae")
    z_mean, z_log_var, _ = encoder.predict(np.array([st["input"]], np.float32), verbose=0)
    assert np.allclose(st["encoded"]["z_mean"], z_mean[0], atol=1e-4)
    assert np.allclose(st["encoded"]["z_log_var"], z_log_var[0], atol=1e-4)
    assert st["marker_rgb"] == [0xc2, 0x41, 0x0c], st["marker_rgb"]  # the diamond on the plane
    shown(st["recon"], "vae", st["encoded"]["z_mean"])
    assert "z_mean" in st["code_text"] and "σ" in st["code_text"]

    b = r["beta"]
    assert b["model"] == "beta_2" and b["view_kept"] and b["cursor"] == b["cursor_before"]
    shown(b["canvas"], "beta_2", b["cursor"])

    c = r["cvae"]
    assert c["digit_before"] == 0 and c["digit_after"] == targets["digit"]
    shown(c["before"], "cvae", c["cursor"], 0)
    shown(c["after"], "cvae", c["cursor"], targets["digit"])
    assert c["before"] != c["after"]

    assert r["wheel"]["after"] > r["wheel"]["before"]
    k = r["keys"]
    assert k["focused"] and k["after"][0] > k["before"][0] and k["after"][1] > k["before"][1]
    shown(k["canvas"], "cvae", k["after"], targets["digit"])
    assert r["frames"] > 5


@pytest.mark.slow
def test_page_is_keyboard_operable(built: Built) -> None:
    """Real key presses (DevTools Input events): tab order, model picker, digits, cursor, beta, pick."""
    state = "(function () { var S = explorer.state(); return {model: S.model.id, digit: S.digit, " \
            "cursor: S.cursor.slice(), picks: S.picks.length, focus: document.activeElement.id || " \
            "document.activeElement.name}; })()"
    after_frame = "new Promise(function (r) { requestAnimationFrame(function () { r(%s); }); })" % state
    with browser.Browser() as chromium:
        chromium.open(built.page.as_uri())
        assert chromium.evaluate(SETTLE) is True
        order = []
        for _ in range(6):
            chromium.press("Tab")
            order.append(chromium.evaluate("document.activeElement.id"))
        assert order == ["model", "beta", "plane", "pad", "random", "clear"]  # digits: disabled for the AE

        chromium.evaluate("document.getElementById('model').focus()")
        chromium.press("ArrowDown")
        chromium.press("ArrowDown")
        assert chromium.evaluate(state)["model"] == "cvae"
        chromium.press("Tab")
        chromium.press("Tab")  # the digit picker, enabled for the conditional VAE
        chromium.press("ArrowRight")
        s = chromium.evaluate(state)
        assert s["focus"] == "digit" and s["digit"] == 1

        chromium.evaluate("document.getElementById('plane').focus()")
        before = chromium.evaluate(state)["cursor"]
        chromium.press("ArrowRight")
        chromium.press("ArrowUp")
        s = chromium.evaluate(after_frame)
        assert s["cursor"][0] > before[0] and s["cursor"][1] > before[1]
        shown = chromium.evaluate("Array.from(explorer.state().shown)")
        expected = chromium.evaluate("explorer.decode('cvae', explorer.state().cursor, 1)")
        assert np.abs(np.array(shown) - np.array(expected)).max() == 0  # drawn for the moved cursor
        chromium.press("Enter")
        assert chromium.evaluate(state)["picks"] == 1

        chromium.evaluate("explorer.setModel('vae')")
        view = chromium.evaluate("JSON.stringify(explorer.state().view)")
        chromium.press("]")  # the next beta, same view
        assert chromium.evaluate(state)["model"] == "beta_2"
        assert chromium.evaluate("JSON.stringify(explorer.state().view)") == view
        assert chromium.console() == []
