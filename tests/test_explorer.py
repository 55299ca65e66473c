"""The latent explorer page (stage explore) in real headless Chromium: numbers and interaction.

The page is built by `dvc repro explore` in a copy of the tiny project (TINY params: models
trained for four epochs, which is all the page needs to be checked against Keras, with decoder
snapshots at epochs 1, 2 and 4 for its replay of training). Probe scripts
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

# What the probes share: wait n animation frames; dispatch a pointer event as a mouse does (a button
# held but on move and up, unless extra says otherwise); a canvas's red channel (its gray levels).
PROBE_HELPERS = """  function frames(n) { return new Promise(function (done) {
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
"""

# Dispatches pointer, wheel and keyboard events like a user, waiting for animation frames between
# them, and records what the page shows. %s: the latent targets, per model, chosen by the test.
INTERACTION_PROBE = """<pre id="probe"></pre><script>
(function () {
""" + PROBE_HELPERS + """  var T = %s;
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
    x = mnist["x_test"].reshape(-1, 784).astype(np.float32) / 255  # TINY: data.binarize none
    vae_codes = load_npz(built.project / "artifacts/vae/encodings.npz", ["z_mean_test"])["z_mean_test"]
    betas = [m for m in built.data["models"] if m["id"].startswith("beta_")]
    assert betas
    for m in built.data["models"]:
        codes = floats(m["codes"], (n, 2))
        if m["id"] in ("ae", "vae", "cvae"):
            key = "z_test" if m["id"] == "ae" else "z_mean_test"
            assert np.array_equal(codes, load_npz(built.project / f"artifacts/{m['id']}/encodings.npz", [key])[key])
        else:  # the sweep's VAEs, encoded by the stage itself: their own encoder's z_mean of every test image
            encoder, _ = keras_models(built.project, m["id"])
            z_mean = encoder.predict(x, batch_size=1000, verbose=0)[0]
            assert np.abs(codes - z_mean).max() <= 1e-4, m["id"]
            assert np.abs(codes - vae_codes).max() > 1e-2, m["id"]  # not the main VAE's codes


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


def assert_shows_keras_decode(project: Path, canvas: list[int], model_id: str, z, digit: int | None = None) -> None:
    """The canvas (its 784 gray levels) shows the Keras decode of z, 8-bit (one level for rounding)."""
    from stages.lib.models import one_hot
    _, decoder = keras_models(project, model_id)
    z = np.array([z], np.float32)
    expected = decoder.predict([z, one_hot([digit])] if digit is not None else z, verbose=0)[0]
    got = np.array(canvas)
    assert got.shape == (784,)
    assert np.abs(got - np.rint(255 * expected)).max() <= 1, model_id


@pytest.mark.slow
def test_page_responds_to_pointer_pad_picker_wheel_and_keys(built: Built) -> None:
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
        assert_shows_keras_decode(built.project, canvas, model_id, z, digit)

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


# Per model: the Random and Clear buttons, the r and c keys, and a stroke on the pad, as a user
# clicks and draws them; records what the page then holds and shows.
PAD_PROBE = """<pre id="probe"></pre><script>
(function () {
""" + PROBE_HELPERS + """  var IDS = %s;
  function shown(id) { return red(id).reduce(function (a, b) { return a + b; }, 0); }  // 0: a black canvas
  function held(S) {
    return {source: S.padSource, digit: S.digit, input: S.input ? Array.from(S.input) : null,
            encoded: S.encoded, recon: red('recon'), code: document.getElementById('code').textContent};
  }
  function key(k) { document.body.dispatchEvent(new KeyboardEvent('keydown', {key: k, bubbles: true, cancelable: true})); }
  window.__probe = new Promise(function (ready) { window.addEventListener('load', ready); }).then(function () {
    return frames(2); }).then(async function () {
    var ex = window.explorer, S = ex.state(), pad = document.getElementById('pad'), R = {};
    for (var n = 0; n < IDS.length; n++) {
      var id = IDS[n], out = R[id] = {};
      ex.setModel(id); await frames(1);
      document.getElementById('random').click(); await frames(2);
      out.random = held(S);
      key('r'); await frames(2);
      out.random_key = held(S);
      document.getElementById('clear').click(); await frames(2);
      out.cleared = {source: S.padSource, encoded: S.encoded, code: document.getElementById('code').textContent,
                     ink: Array.prototype.reduce.call(S.pad, function (a, b) { return a + b; }, 0),
                     shown: ['pad', 'input', 'recon'].map(shown)};
      var r = pad.getBoundingClientRect();
      [[0.35, 0.25], [0.6, 0.3], [0.45, 0.55], [0.4, 0.8]].forEach(function (f, k) {
        pointer(pad, k === 0 ? 'pointerdown' : 'pointermove', r.left + f[0] * r.width, r.top + f[1] * r.height,
                {buttons: 1}); });
      pointer(pad, 'pointerup', r.left + 0.4 * r.width, r.top + 0.8 * r.height);
      await frames(2);
      out.stroke = held(S);
      key('c'); await frames(2);
      out.key_cleared = {source: S.padSource, encoded: S.encoded, shown: shown('pad')};
    }
    R.errors = window.__errors.slice();
    document.getElementById('probe').textContent = JSON.stringify(R);
  }).catch(function (e) {
    document.getElementById('probe').textContent = JSON.stringify({fatal: String(e && e.stack || e), errors: window.__errors});
  });
})();
</script>"""


@pytest.mark.slow
def test_random_image_clear_and_the_pad_encode_like_keras_for_every_kind_of_model(built: Built) -> None:
    """Random test image and Clear (buttons and keys), and a drawn stroke, for the AE, VAE and CVAE:
    the pad holds the named test image, the code shown is the Keras encoder's, Clear empties all."""
    from stages.lib.files import load_npz
    from stages.lib.models import one_hot
    mnist = load_npz(built.project / "data/mnist.npz", ["x_test", "y_test"])
    index = set(built.data["image_index"])
    r = browser.probe(built.page, PAD_PROBE % json.dumps(["ae", "vae", "cvae"]), built.out, "pad.html")
    assert r["errors"] == [], r["errors"]

    def encodes_like_keras(model_id: str, held: dict, digit: int | None) -> None:
        encoder, _ = keras_models(built.project, model_id)
        x = np.array([held["input"]], np.float32)
        inputs = [x, one_hot([digit])] if digit is not None else x
        e = held["encoded"]
        if model_id == "ae":
            z = encoder.predict(inputs, verbose=0)[0]
            assert np.allclose(e["z"], z, atol=1e-4), (model_id, e["z"], z)
            assert held["code"].startswith("z = (")
        else:
            z, z_log_var, _ = (a[0] for a in encoder.predict(inputs, verbose=0))
            assert np.allclose(e["z_mean"], z, atol=1e-4) and np.allclose(e["z_log_var"], z_log_var, atol=1e-4)
            assert held["code"].startswith("z_mean = (") and "σ" in held["code"]
        assert_shows_keras_decode(built.project, held["recon"], model_id, z, digit)

    for model_id in ("ae", "vae", "cvae"):
        m = r[model_id]
        for held in (m["random"], m["random_key"]):
            found = re.fullmatch(r"test image #(\d+), digit (\d)", held["source"])
            assert found, held["source"]
            i, label = int(found.group(1)), int(found.group(2))
            assert i in index and label == mnist["y_test"][i]
            # The pad holds that test image as it is (no centring: only drawings are centred).
            assert np.array_equal(np.array(held["input"], np.float32),
                                  (mnist["x_test"][i].reshape(784) / 255).astype(np.float32)), (model_id, i)
            digit = label if model_id == "cvae" else None
            if digit is not None:
                assert held["digit"] == label  # the conditional VAE takes the image's digit
            encodes_like_keras(model_id, held, digit)
            assert held["source"] in held["code"]
        st = m["stroke"]
        assert st["source"] == "drawing" and sum(st["input"]) > 10
        encodes_like_keras(model_id, st, m["random_key"]["digit"] if model_id == "cvae" else None)
        c = m["cleared"]
        assert c["source"] is None and c["encoded"] is None and c["code"] == "draw a digit"
        assert c["ink"] == 0 and c["shown"] == [0, 0, 0], c
        k = m["key_cleared"]
        assert k["source"] is None and k["encoded"] is None and k["shown"] == 0


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
        for _ in range(8):
            chromium.press("Tab")
            order.append(chromium.evaluate("document.activeElement.id"))
        assert order == ["model", "beta", "epoch", "play", "plane", "pad", "random", "clear"]  # digits: disabled for the AE

        chromium.evaluate("document.getElementById('model').focus()")
        chromium.press("ArrowDown")
        chromium.press("ArrowDown")
        assert chromium.evaluate(state)["model"] == "cvae"
        for _ in range(4):  # beta, epoch, play, then the digit picker, enabled for the conditional VAE
            chromium.press("Tab")
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

        # The replay: "," and "." step the epoch, "p" plays and pauses; the slider takes the arrow keys.
        chromium.evaluate("explorer.setModel('vae')")
        epoch = "explorer.epoch()"
        last = chromium.evaluate(epoch)
        chromium.press(",")
        chromium.press(",")
        assert chromium.evaluate(epoch) == last - 2
        chromium.press(".")
        assert chromium.evaluate(epoch) == last - 1
        chromium.press("p")  # from a middle epoch, play goes on from there
        assert chromium.evaluate("explorer.state().playing !== null") is True
        chromium.press("p")
        assert chromium.evaluate("explorer.state().playing") is None
        chromium.evaluate("document.getElementById('epoch').focus()")
        before = chromium.evaluate(epoch)
        chromium.press("ArrowLeft")
        assert chromium.evaluate(epoch) == before - 1
        assert chromium.evaluate("document.getElementById('epoch').value") == str(before - 1)
        assert chromium.console() == []


# --- the replay of training (issue 24) -------------------------------------------------------------

# Moves the epoch slider (real input events) per model and epoch and records the dots the plane drew,
# their pixels on the points layer, the notes; hovers at chosen epochs; decodes with the snapshots;
# switches models; plays. %s: the cases, chosen by the test.
REPLAY_PROBE = """<pre id="probe"></pre><script>
(function () {
""" + PROBE_HELPERS + """  var T = %s;
  function sleep(ms) { return new Promise(function (done) { setTimeout(done, ms); }); }
  function b64(f) {
    var u = new Uint8Array(f.buffer, f.byteOffset, f.byteLength), s = '';
    for (var i = 0; i < u.length; i += 0x8000) s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));
    return btoa(s);
  }
  function $(id) { return document.getElementById(id); }
  function pick(value) { var s = $('model'); s.value = value; s.dispatchEvent(new Event('change', {bubbles: true})); }
  function slide(e) { var s = $('epoch'); s.value = String(e); s.dispatchEvent(new Event('input', {bubbles: true})); }
  function notes() { return {value: $('epoch-value').textContent, decoder: $('decoder-note').textContent,
                             encoder: $('encoder-note').textContent, dots: $('dots-note').textContent,
                             slider: $('epoch').value, max: $('epoch').max, disabled: $('epoch').disabled}; }
  window.__probe = new Promise(function (ready) { window.addEventListener('load', ready); }).then(function () { return frames(2); }).then(async function () {
    var ex = window.explorer, S = ex.state(), plane = $('plane'), R = {dots: {}, hover: [], numbers: {}};
    // The points layer read through a copy made for reading (else Chromium warns of repeated readbacks).
    var copy = document.createElement('canvas'), layer = copy.getContext('2d', {willReadFrequently: true});
    R.start = {epoch: ex.epoch(), notes: notes()};
    for (var id in T.dots) {
      pick(id); await frames(1);
      R.dots[id] = {};
      for (var e in T.dots[id]) {
        slide(+e); await frames(2);
        var d = ex.drawn(), rect = plane.getBoundingClientRect();
        copy.width = ex.pointsLayer.width; copy.height = ex.pointsLayer.height; layer.drawImage(ex.pointsLayer, 0, 0);
        var pixels = T.dots[id][e].isolated.concat(T.dots[id][e].any).map(function (i) {
          var q = ex.latentToClient([d.codes[2 * i], d.codes[2 * i + 1]]);
          return Array.from(layer.getImageData(Math.floor(q[0] - rect.left), Math.floor(q[1] - rect.top), 1, 1).data);
        });
        R.dots[id][e] = {epoch: ex.epoch(), drawn_epoch: d.epoch, n: d.n, codes: b64(new Float32Array(d.codes)),
                         pixels: pixels, notes: notes()};
      }
    }
    for (var k = 0; k < T.hover.length; k++) {  // a real pointer move over the plane, at a chosen epoch
      var h = T.hover[k];
      pick(h.id); await frames(1);
      if (h.digit !== undefined) { ex.setDigit(h.digit); await frames(1); }
      slide(h.epoch); await frames(1);
      var p = ex.latentToClient(h.z);
      pointer(plane, 'pointermove', p[0], p[1]);
      await frames(2);
      R.hover.push({id: h.id, epoch: ex.epoch(), cursor: S.cursor.slice(), digit: S.digit, shown: b64(S.shown),
                    decoder_epoch: ex.decoderEpoch(h.id, h.epoch), notes: notes()});
    }
    for (var id2 in T.numbers) {  // the page's own decoder at each snapshot epoch, many points
      var c = T.numbers[id2];
      R.numbers[id2] = {};
      c.epochs.forEach(function (e) {
        var out = new Float32Array(c.points.length * 784);
        c.points.forEach(function (z, j) { out.set(ex.decodeAt(id2, e, z[0], z[1], j %% 10), j * 784); });
        R.numbers[id2][e] = {decoder_epoch: ex.decoderEpoch(id2, e), decoded: b64(out)};
      });
    }
    // Switching models keeps the epoch; a model without a record shows its final state.
    pick('vae'); await frames(1); slide(2); await frames(1);
    pick('ae'); await frames(1);
    R.switch = {ae: {epoch: ex.epoch(), notes: notes()}};
    pick('beta_2'); await frames(1);
    R.switch.beta_2 = {epoch: ex.epoch(), notes: notes(), n: ex.drawn().n};
    pick('cvae'); await frames(1);
    R.switch.cvae = {epoch: ex.epoch(), notes: notes()};
    // Play: from the last epoch it starts over at 0 and stops at the last.
    slide(T.last); await frames(1);
    $('play').click();
    R.play = {first: ex.epoch(), pressed: $('play').getAttribute('aria-pressed'), label: $('play').textContent};
    await sleep(T.play_wait_ms);
    R.play.later = ex.epoch();
    var waited = 0;
    while (S.playing && waited < 20000) { await sleep(100); waited += 100; }
    R.play.end = {epoch: ex.epoch(), playing: S.playing, pressed: $('play').getAttribute('aria-pressed'),
                  label: $('play').textContent};
    R.errors = window.__errors.slice();
    document.getElementById('probe').textContent = JSON.stringify(R);
  }).catch(function (e) {
    document.getElementById('probe').textContent = JSON.stringify({fatal: String(e && e.stack || e), errors: window.__errors});
  });
})();
</script>"""

TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
PLANE = (800 - 46 - 10, 500 - 10 - 30)  # the page's plotting area in CSS pixels (its margins M)


def isolated(codes: np.ndarray, extent: list[float], k: int = 3) -> list[int]:
    """Indices of up to ``k`` codes whose dot no other dot touches (more than 3 screen pixels apart on
    either axis) at the page's first view of ``extent`` (its fit()), away from the plot's edges."""
    x0, x1, y0, y1 = extent
    scale = min(PLANE[0] / (x1 - x0), PLANE[1] / (y1 - y0))
    px = (codes.astype(np.float64) - [(x0 + x1) / 2, (y0 + y1) / 2]) * scale
    inside = np.flatnonzero((np.abs(px[:, 0]) < PLANE[0] / 2 - 8) & (np.abs(px[:, 1]) < PLANE[1] / 2 - 8))
    found = []
    for i in inside:
        near = np.abs(px - px[i]).max(axis=1) <= 3
        if near.sum() == 1:
            found.append(int(i))
            if len(found) == k:
                break
    return found


@dataclass
class Replay:
    result: dict
    cases: dict
    evolution: dict      # model -> evolution.npz's arrays
    snapshots: dict      # model -> snapshots.Snapshots


@pytest.fixture(scope="module")
def replay(built: Built) -> Replay:
    from stages.lib import snapshots
    from stages.lib.files import load_npz

    ids = ["ae", "vae", "cvae"]
    evo = {m: load_npz(built.project / f"artifacts/{m}/evolution.npz", ["codes", "epochs", "index", "labels"])
           for m in ids}
    snaps = {m: snapshots.load(built.project / f"artifacts/{m}/snapshots.npz") for m in ids}
    by_id = {m["id"]: m for m in built.data["models"]}
    last = int(evo["vae"]["epochs"][-1])
    assert last == 4, "the tests' TINY trains 4 epochs (tests/conftest.py)"
    # Dots to find on the canvas: isolated ones at epochs 0, 1, 3 (the subset) and the last (every code).
    final = {m: floats(by_id[m]["codes"], (built.data["n_codes"], 2)) for m in ids}
    dots = {}
    for m in ids:
        dots[m] = {}
        for e in (0, 1, 3, last):
            codes = evo[m]["codes"][e] if e < last else final[m]
            dots[m][e] = {"isolated": isolated(codes, by_id[m]["extent"]),
                          "any": [int(i) for i in np.random.default_rng(e).choice(len(codes), 5, replace=False)]}
            # The first view holds every epoch's codes: none is off the plane.
            x0, x1, y0, y1 = by_id[m]["extent"]
            assert (codes >= [x0, y0]).all() and (codes <= [x1, y1]).all(), (m, e)
    # At epoch 0 the codes sit in one small blob (the initial weights): no dot stands alone there.
    assert sum(len(d["isolated"]) for by in dots.values() for d in by.values()) >= 20, dots
    rng = np.random.default_rng(1)
    x0, x1, y0, y1 = by_id["vae"]["extent"]
    z = lambda u, v: [x0 + u * (x1 - x0), y0 + v * (y1 - y0)]  # noqa: E731
    cases = {
        "dots": dots,
        # At a snapshot epoch (1), between two (3: epoch 2's decoder), before the first (0), and the CVAE's.
        "hover": [{"id": "vae", "epoch": 1, "z": z(0.3, 0.6)}, {"id": "vae", "epoch": 3, "z": z(0.7, 0.4)},
                  {"id": "ae", "epoch": 0, "z": [float(v) for v in final["ae"][:100].mean(axis=0)]},
                  {"id": "cvae", "epoch": 2, "z": z(0.5, 0.5), "digit": 7}],
        "numbers": {m: {"epochs": [0, 1, 2, 3], "points": rng.uniform([by_id[m]["extent"][0], by_id[m]["extent"][2]],
                                                                      [by_id[m]["extent"][1], by_id[m]["extent"][3]],
                                                                      (100, 2)).astype(np.float32).tolist()}
                    for m in ids},
        "last": last, "play_wait_ms": 600,
    }
    result = browser.probe(built.page, REPLAY_PROBE % json.dumps(cases), built.out, "replay.html")
    assert "fatal" not in result, result
    assert result["errors"] == [] and result["_console"] == [], (result["errors"], result["_console"])
    return Replay(result, cases, evo, snaps)


def keras_decode_at(project: Path, model_id: str, snaps, epoch: int, z: np.ndarray, digits=None) -> np.ndarray:
    """Keras' decode of ``z`` with the decoder weights recorded at ``epoch`` (float32)."""
    from stages.lib import models

    decoder = models.load(project / f"artifacts/{model_id}/decoder.keras")
    decoder.set_weights(snaps.weights("decoder", epoch, [w.path for w in decoder.weights]))
    inputs = [z, models.one_hot(digits)] if digits is not None else z
    return decoder.predict(inputs, verbose=0)


@pytest.mark.slow
def test_replay_slider_moves_the_dots_to_each_epochs_codes(built: Built, replay: Replay) -> None:
    from stages.lib import explorer
    from stages.lib.files import load_npz

    r = replay.result
    assert r["start"]["epoch"] == 4 and r["start"]["notes"]["value"] == "epoch 4 of 4"
    n_codes = built.data["n_codes"]
    for m, by_epoch in r["dots"].items():
        ev = replay.evolution[m]
        key = "z_test" if m == "ae" else "z_mean_test"
        final = load_npz(built.project / f"artifacts/{m}/encodings.npz", [key])[key]
        labels = np.frombuffer(base64.b64decode(built.data["labels"]), np.uint8)
        for e, got in by_epoch.items():
            e = int(e)
            assert got["epoch"] == got["drawn_epoch"] == e and got["notes"]["slider"] == str(e), (m, e)
            if e < 4:  # the subset's codes of that epoch, as the page carries them (3 high bytes of each)
                codes = floats(got["codes"], (got["n"], 2))
                assert got["n"] == len(ev["index"])
                assert np.array_equal(codes, explorer.float24(ev["codes"][e])), (m, e)
                assert np.abs(codes - ev["codes"][e]).max() <= 2 ** -15 * np.abs(ev["codes"][e]).max()
                dot_labels = ev["labels"]
                assert f"epoch {e}: {len(ev['index'])} test images (a fixed subset)" in got["notes"]["dots"]
                assert "final model" in got["notes"]["encoder"]
            else:  # the last epoch: every test code, which for the subset are its last recorded ones
                codes = floats(got["codes"], (got["n"], 2))
                assert got["n"] == n_codes and np.array_equal(codes, final), m
                assert np.array_equal(codes[ev["index"]], ev["codes"][-1]), m
                dot_labels = labels
                assert got["notes"]["dots"] == "" and got["notes"]["encoder"] == ""
            # Each isolated dot is on the points layer at its code, in its digit's colour (alpha 0.7); at
            # any dot's code something is drawn (overlapping dots: alpha 0.7 or more).
            chosen = replay.cases["dots"][m][e]
            assert len(got["pixels"]) == len(chosen["isolated"]) + len(chosen["any"])
            for i, rgba in zip(chosen["isolated"], got["pixels"]):
                colour = [int(TAB10[dot_labels[i]][k:k + 2], 16) for k in (1, 3, 5)]
                assert np.abs(np.array(rgba[:3]) - colour).max() <= 2 and abs(rgba[3] - 0.7 * 255) <= 1.5, (m, e, i, rgba)
            for i, rgba in zip(chosen["any"], got["pixels"][len(chosen["isolated"]):]):
                assert rgba[3] >= 0.7 * 255 - 1.5, (m, e, i, rgba)


@pytest.mark.slow
def test_replay_hover_decodes_with_that_epochs_decoder_snapshot(built: Built, replay: Replay) -> None:
    worst = {}
    for case, got in zip(replay.cases["hover"], replay.result["hover"]):
        m, e = case["id"], case["epoch"]
        snaps = replay.snapshots[m]
        recorded = snaps.epochs["decoder"].tolist()
        assert recorded == [1, 2, 4]
        expected_epoch = max([d for d in recorded if d <= e] or recorded[:1])
        assert got["epoch"] == e and got["decoder_epoch"] == expected_epoch, (case, got["decoder_epoch"])
        note = got["notes"]["decoder"]
        assert f"decoded by the decoder of epoch {expected_epoch}" in note, note
        if expected_epoch != e:  # between snapshots the page says which one decodes, and which exist
            assert ("the first snapshot" if e == 0 else "the nearest snapshot before") in note
            assert "snapshots at epochs 1, 2, 4" in note
        cursor = np.array([got["cursor"]], np.float32)
        assert np.allclose(cursor[0], case["z"], atol=0.05 * np.abs(case["z"]).max() + 0.05)
        digits = [got["digit"]] if m == "cvae" else None
        expected = keras_decode_at(built.project, m, snaps, expected_epoch, cursor, digits)[0]
        shown = np.frombuffer(base64.b64decode(got["shown"]), "<f4")
        worst[(m, e)] = float(np.abs(shown - expected).max())
        assert worst[(m, e)] <= 1e-3, (m, e, worst[(m, e)])
    print("hover, max |page - keras| per pixel:", worst)


@pytest.mark.slow
def test_replay_decoder_snapshots_decode_within_1e3_of_keras(built: Built, replay: Replay) -> None:
    """100 points per model and epoch, through the page's 3-byte weights, against Keras' float32 ones."""
    worst = {}
    for m, case in replay.cases["numbers"].items():
        snaps = replay.snapshots[m]
        points = np.array(case["points"], np.float32)
        digits = [j % 10 for j in range(len(points))] if m == "cvae" else None
        for e in case["epochs"]:
            got = replay.result["numbers"][m][str(e)]
            d = got["decoder_epoch"]
            expected = keras_decode_at(built.project, m, snaps, d, points, digits)
            decoded = floats(got["decoded"], (len(points), 784))
            worst[(m, e, d)] = float(np.abs(decoded - expected).max())
            assert worst[(m, e, d)] <= 1e-3, (m, e, d, worst[(m, e, d)])
            # Not the final decoder's decodes: the snapshot is another model.
            if d != 4:
                final = keras_decode_at(built.project, m, snaps, 4, points, digits)
                assert np.abs(final - expected).max() > 1e-2, (m, e)
    print("snapshot decodes, max |page - keras| per pixel:", worst)


@pytest.mark.slow
def test_replay_keeps_the_epoch_across_models_and_plays(replay: Replay) -> None:
    s = replay.result["switch"]
    assert s["ae"]["epoch"] == 2 and s["ae"]["notes"]["slider"] == "2" and not s["ae"]["notes"]["disabled"]
    assert s["beta_2"]["epoch"] is None and s["beta_2"]["notes"]["disabled"] and s["beta_2"]["n"] == 10000
    assert s["beta_2"]["notes"]["value"] == "final (training not recorded)" and s["beta_2"]["notes"]["decoder"] == ""
    assert s["cvae"]["epoch"] == 2 and s["cvae"]["notes"]["value"] == "epoch 2 of 4"
    p = replay.result["play"]
    assert p["first"] == 0 and p["pressed"] == "true" and "Pause" in p["label"]
    assert 0 < p["later"] <= 4
    assert p["end"] == {"epoch": 4, "playing": None, "pressed": "false", "label": "▶ Play"}


def test_default_size_page_stays_under_its_bound() -> None:
    """The page with the default params' shapes: every model of the sweep, 50 epochs of 2000 codes,
    4 decoder snapshots per model (untrained models and random codes: base64 does not compress, so
    the size depends on the shapes only). The stage checks the same bound on the real page."""
    import yaml

    from stages.lib import explorer, models, snapshots
    from tests.conftest import ROOT

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    rng = np.random.default_rng(0)
    n_test = 10000
    index = np.sort(rng.choice(n_test, p["evolution"]["images"], replace=False))
    entries = []
    for src in explorer.sources(tuple(p["beta_sweep"]["betas"]), p["vae"]["beta"], p["cvae"]["beta"]):
        block = p[src.id] if src.replay else p["vae"]
        model = models.build(src.kind, block["latent_dim"], tuple(block["hidden"]), seed=0)
        codes = rng.standard_normal((n_test, 2)).astype(np.float32)
        replay_data = None
        if src.replay:
            n_epochs = block["epochs"]
            evolution = {"codes": np.concatenate([rng.standard_normal((n_epochs, len(index), 2)), codes[index][None]]
                                                 ).astype(np.float32),
                         "epochs": np.arange(n_epochs + 1), "index": index}
            final = {w.path: v for w, v in zip(model.decoder.weights, model.decoder.get_weights())}
            recorded = {e: {k: v + np.float32(0.01) for k, v in final.items()}
                        for e in snapshots.DECODER_EPOCHS if e < n_epochs}
            arrays = snapshots.arrays({"encoder": {0: {"unused": np.zeros(1, np.float32)}},
                                       "decoder": {**recorded, n_epochs: final}})
            snaps = snapshots.Snapshots(Path("synthetic"), {part: arrays.pop(f"{part}_epochs")
                                                            for part in snapshots.PARTS}, arrays)
            replay_data = explorer.replay_entry(src, model.decoder, codes, evolution, snaps)
            assert len(replay_data["decoders"]) == len(recorded)
        entries.append(explorer.model_entry(src, model.encoder, model.decoder, codes, replay_data,
                                            evolution["codes"] if src.replay else None))
    labels = rng.integers(0, 10, n_test).astype(np.uint8)
    shown = explorer.image_subset(n_test, p["explore"]["images"], 0)
    images = rng.integers(0, 256, (len(shown), 28, 28)).astype(np.uint8)
    page = explorer.render(explorer.payload(entries, labels, images, labels[shown], shown, p["explore"]["steps"]),
                           max_bytes=10**9)
    size = len(page.encode())
    print(f"default-size explorer page: {size} bytes (bound {explorer.MAX_PAGE_BYTES})")
    assert size <= explorer.MAX_PAGE_BYTES
    # ... and over the bound the stage's render refuses, in one line.
    from stages.lib import StageError
    with pytest.raises(StageError, match=r"^artifacts/explorer/index\.html: \d+ bytes, over the page's bound of "
                                         r"1000000 \(explorer\.MAX_PAGE_BYTES\); nothing written") as exc:
        explorer.render(explorer.payload(entries[:1], labels, images, labels[shown], shown, 10), max_bytes=10**6,
                        name="artifacts/explorer/index.html")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("probe_js, message", [
    # The numbers probe has no catch: an exception in it reaches the page's error handler.
    ("window.explorer.decodeRaw('no such model', 0, 0);", "no such model"),
    # The interaction probes catch their own and report them as fatal.
    ("Promise.reject(new Error('pad broke')).catch(function (e) { document.getElementById('probe')"
     ".textContent = JSON.stringify({fatal: String(e)}); });", "pad broke"),
])
def test_a_javascript_exception_fails_the_probe_with_its_message(tmp_path: Path, probe_js: str,
                                                                 message: str) -> None:
    if not browser.CHROMIUM.exists():
        pytest.skip(f"no Chromium at {browser.CHROMIUM}: tools/install-system-deps installs it")
    page = tmp_path / "page.html"
    page.write_text("<!doctype html><html><head><title>t</title></head><body><script>"
                    "window.explorer = {decodeRaw: function (id) { throw new Error(id + ': unknown'); }};"
                    "</script></body></html>")
    with pytest.raises(AssertionError, match=message):
        browser.probe(page, f'<pre id="probe"></pre><script>{probe_js}</script>', tmp_path)
