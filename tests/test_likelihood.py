"""The likelihood estimators: against a closed form, the Bernoulli matrix path against a loop,
and the ordering -ELBO >= -IWAE_k >= -log p(x) on a small trained VAE."""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest

from stages.lib import likelihood as lik

# --- a linear-Gaussian model: z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_D) ---------------------

D, S = 5, 0.3


@pytest.fixture(scope="module")
def linear_gaussian() -> dict:
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(D, 2)), rng.normal(size=D)
    z = rng.standard_normal((40, 2))
    x = z @ w.T + b + S * rng.standard_normal((40, D))
    # The marginal: x ~ N(b, W W^T + s^2 I).
    cov = w @ w.T + S ** 2 * np.eye(D)
    diff = x - b
    log_px = -0.5 * (np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff)
                     + np.linalg.slogdet(cov)[1] + D * math.log(2 * math.pi))
    # The exact posterior: N(Sigma W^T (x - b) / s^2, Sigma), Sigma = (I + W^T W / s^2)^-1.
    post_cov = np.linalg.inv(np.eye(2) + w.T @ w / S ** 2)
    post_mean = diff @ w @ post_cov / S ** 2
    return {"w": w, "b": b, "x": x, "nll": -log_px, "post_mean": post_mean, "post_cov": post_cov}


def gaussian_pairs(m: dict) -> lik.PairLogLikelihood:
    def log_likelihood(rows: np.ndarray, z: np.ndarray) -> np.ndarray:
        mean = z @ m["w"].T + m["b"]                               # (n, k, D)
        r = m["x"][rows][:, None, :] - mean
        return -0.5 * (np.square(r).sum(-1) / S ** 2 + D * math.log(2 * math.pi * S ** 2))
    return log_likelihood


def gaussian_grid(m: dict) -> lik.GridLogLikelihood:
    pairs = gaussian_pairs(m)
    n = len(m["x"])
    return lambda z: pairs(np.arange(n), np.broadcast_to(z, (n, *z.shape)))


def test_quadrature_matches_the_closed_form(linear_gaussian) -> None:
    q = lik.quadrature(gaussian_grid(linear_gaussian), bound=6, points=101)
    np.testing.assert_allclose(q.fine, linear_gaussian["nll"], atol=1e-6)
    np.testing.assert_allclose(q.coarse, linear_gaussian["nll"], atol=1e-6)
    assert (q.points, q.fine_points) == (101, 201)


def test_a_coarse_grid_misses_and_the_fine_one_tells(linear_gaussian) -> None:
    """A grid coarser than the posterior is wrong, and the coarse/fine difference shows it."""
    q = lik.quadrature(gaussian_grid(linear_gaussian), bound=6, points=7)
    assert np.abs(q.coarse - linear_gaussian["nll"]).max() > 0.05
    assert np.abs(q.coarse - q.fine).max() > 0.05


def test_iwae_with_the_exact_posterior_is_exact_for_every_k(linear_gaussian) -> None:
    m = linear_gaussian
    # The posterior covariance is not diagonal; rotate z so that it is, for the diagonal proposal.
    evals, evecs = np.linalg.eigh(m["post_cov"])
    rotated = dict(m, w=m["w"] @ evecs)                            # z' = evecs^T z: same prior
    mean = m["post_mean"] @ evecs
    log_var = np.broadcast_to(np.log(evals), mean.shape)
    result = lik.iwae(gaussian_pairs(rotated), mean, log_var, (1, 10), np.random.default_rng(1), batch=7)
    for k in (1, 10):
        assert result[k].nll == pytest.approx(m["nll"].mean(), abs=1e-9)
        assert result[k].stderr < 1e-9
    elbo = lik.neg_elbo(gaussian_pairs(rotated), mean, log_var, np.random.default_rng(2), batch=7)
    # With the analytic KL only the expectation is exact: one z per image leaves noise in the mean.
    assert elbo.mean() == pytest.approx(m["nll"].mean(), abs=0.1)


def test_iwae_with_a_wrong_proposal_converges_as_k_grows(linear_gaussian) -> None:
    m = linear_gaussian
    mean = m["post_mean"] + 0.3                                    # shifted, and too wide
    log_var = np.full_like(mean, math.log(4 * m["post_cov"].diagonal().max()))
    ks = (1, 10, 100, 1000, 5000)
    result = lik.iwae(gaussian_pairs(m), mean, log_var, ks, np.random.default_rng(3), batch=8)
    truth = m["nll"].mean()
    gaps = [result[k].nll - truth for k in ks]
    assert gaps[0] > 1.0                                           # the bound at k = 1 is loose
    for k, gap in zip(ks, gaps):                                   # a bound: above the truth, within noise
        assert gap > -3 * result[k].stderr, (k, gap, result[k])
    for a, b, k in zip(gaps, gaps[1:], ks[1:]):                    # tighter as k grows
        assert b < a + 3 * result[k].stderr
    assert gaps[-1] < 0.02 and result[5000].stderr < 0.01
    # -ELBO with the analytic KL has the expectation of the k = 1 bound (one z per image: noisy).
    elbos = [lik.neg_elbo(gaussian_pairs(m), mean, log_var, np.random.default_rng(seed)).mean()
             for seed in range(30)]
    assert np.mean(elbos) == pytest.approx(result[1].nll, abs=4 * np.std(elbos) / math.sqrt(30))


def test_in_order_runs_two_calls_at_once_and_yields_them_in_order() -> None:
    import threading
    import time

    both = threading.Barrier(2, timeout=20)                         # broken unless two calls meet
    started: list[int] = []

    def call(i: int) -> int:
        started.append(i)
        if i in (1, 2):
            both.wait()
        time.sleep(0.01 * (5 - i))                                  # later calls finish sooner
        return i

    results = []
    for r in lik.in_order(lambda i=i: call(i) for i in range(5)):
        results.append(r)
        assert len(started) <= r + 1 + lik.THREADS                  # at most THREADS calls ahead
    assert results == list(range(5))


def test_the_estimates_on_two_threads_are_the_serial_bytes(linear_gaussian, monkeypatch) -> None:
    """The samples are drawn on the caller's thread in one order, whatever thread decodes them."""
    m = linear_gaussian
    mean, log_var = m["post_mean"] + 0.3, np.full_like(m["post_mean"], -1.0)

    def estimates() -> tuple:
        iwae = lik.iwae(gaussian_pairs(m), mean, log_var, (1, 10, 100), np.random.default_rng(3), batch=3)
        q = lik.quadrature(gaussian_grid(m), 5.0, 41, chunk=64)
        return [(e.nll, e.stderr) for e in iwae.values()], q.coarse.tobytes(), q.fine.tobytes()

    threaded = estimates()
    monkeypatch.setattr(lik, "THREADS", 1)
    assert estimates() == threaded


# --- the Bernoulli likelihood ------------------------------------------------------------------

@pytest.fixture(scope="module")
def pixels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.random((6, 784))
    x[:, :300] = np.round(x[:, :300])                              # binary pixels and grey ones
    logits = rng.normal(scale=8, size=(50, 784))
    logits[:, :20] = 30.0                                           # beyond Keras' clipping, both sides
    logits[:, 20:40] = -30.0
    return x, logits


def test_matrix_path_equals_a_loop_over_images_and_grid_points(pixels) -> None:
    x, logits = pixels
    got = lik.bernoulli_log_likelihood(x, logits)
    eps = np.float32(1e-7)                                         # Keras clips d in float32
    d = np.clip(1 / (1 + np.exp(-logits)), float(eps), float(np.float32(1) - eps))
    for i in range(len(x)):
        for j in range(len(logits)):
            want = np.sum(x[i] * np.log(d[j]) + (1 - x[i]) * np.log(1 - d[j]))
            assert got[i, j] == pytest.approx(want, abs=2e-5)
    pairs = lik.bernoulli_log_likelihood_pairs(x, np.broadcast_to(logits, (len(x), *logits.shape)))
    np.testing.assert_allclose(pairs, got, rtol=1e-12, atol=1e-9)


def test_bernoulli_likelihood_matches_the_keras_reconstruction_loss(pixels) -> None:
    from stages.lib import models

    x, logits = pixels
    logits = logits[:len(x)] / 3                                   # a decoder's range: |a| mostly < 8
    logits[:, :20], logits[:, 20:40] = 30.0, -30.0                 # and some clipped pixels
    d = (1 / (1 + np.exp(-logits))).astype(np.float32)
    keras_loss = np.asarray(models.reconstruction_loss(x.astype(np.float32), d), np.float64)
    ours = -np.diag(lik.bernoulli_log_likelihood(x, logits))
    # Keras works in float32 (1 - d loses digits near d = 1); we work in float64 from the logits.
    np.testing.assert_allclose(ours, keras_loss, atol=0.02)


def test_entropy_floor() -> None:
    x = np.array([[0.0, 1.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(lik.binary_entropy(x), [2 * math.log(2), 0.0])
    # The floor is the reconstruction term at d = x: the Bernoulli likelihood's maximum over d.
    logits = np.array([[-50.0, 50.0, 0.0, 0.0]])                   # d = x (clipped at 0 and 1)
    assert -lik.bernoulli_log_likelihood(x[:1], logits)[0, 0] == pytest.approx(2 * math.log(2), abs=1e-5)


# --- a small trained VAE and CVAE: the ordering of the estimates --------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> dict:
    """A VAE and a CVAE trained briefly on 2000 real MNIST images by the project's training code.

    Not fewer steps: after 2 epochs of 1000 images (16 steps) the posteriors are so narrow and far out
    (KL near 30 nats) that even grids of 151 and 301 points per axis differ by more than 0.05 nats.
    """
    from stages.lib import mnist, models, params, training

    arrays = mnist.fetch([], tmp_path_factory.mktemp("mnist"), 5, 0, env={"MNIST_MIRROR": str(mnist_dir)})
    x, y = arrays["x_train"][:2000].astype(np.float32) / 255, arrays["y_train"][:2000].astype(np.int32)
    x_test, y_test = arrays["x_test"][:500].astype(np.float32) / 255, arrays["y_test"][:500].astype(np.int32)
    p = params.VAEParams(latent_dim=2, hidden=(128, 16), epochs=5, batch_size=32, learning_rate=0.001,
                         seed=0, beta=1.0, kl_warmup_epochs=0, validation=0, validation_seed=0, patience=0)
    out = tmp_path_factory.mktemp("models")
    metrics = {"vae": training.train("vae", p, x, x_test, out / "vae"),
               "cvae": training.train("cvae", p, (x, models.one_hot(y)), (x_test, models.one_hot(y_test)),
                                      out / "cvae")}
    return {"dir": out, "metrics": metrics, "x": x_test.reshape(len(x_test), -1), "y": y_test}


LIKELIHOOD = {"seed": 0, "images": 200, "iwae_k": [1, 10, 100, 1000], "grid": {"bound": 6.0, "points": 151,
                                                                            "tolerance": 0.05}}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vae", "cvae"])
def test_elbo_iwae_and_quadrature_are_ordered(trained: dict, kind: str) -> None:
    from stages.lib import marginal, params

    p = params.LikelihoodParams.model_validate(LIKELIHOOD)
    r = marginal.evaluate(trained["dir"] / kind, kind == "cvae", trained["x"], trained["y"], p, kind)
    # The stage's -ELBO is the training's, up to the one sample of z per image.
    assert r["test_neg_elbo"] == pytest.approx(trained["metrics"][kind]["test_neg_elbo"], abs=1.0)
    ks = LIKELIHOOD["iwae_k"]
    iwae = [r["iwae"][f"k_{k}"] for k in ks]
    quad = r["quadrature"]["nll_fine"]
    # The two grids agree: the quadrature has converged.
    assert abs(r["quadrature"]["nll"] - quad) < 0.05
    # -ELBO >= -IWAE_k >= -log p(x), each within its Monte-Carlo error; -IWAE_k falls as k grows.
    assert r["neg_elbo"] > iwae[0]["nll"] - 1.0                    # same expectation at k = 1; one z each
    for e in iwae:
        assert e["nll"] > quad - 3 * e["stderr"], (e, quad)
    for a, b in zip(iwae, iwae[1:]):
        assert b["nll"] < a["nll"] + 3 * math.hypot(a["stderr"], b["stderr"]), (a, b)
    assert iwae[0]["nll"] - iwae[-1]["nll"] > 0.3                  # and the bound does tighten
    assert r["neg_elbo"] > quad + 0.3
    assert r["above_floor"]["quadrature"] == pytest.approx(quad - r["entropy_floor"])


@pytest.mark.slow
def test_the_grid_path_equals_keras_loss_per_image_on_a_real_decoder(trained: dict) -> None:
    """The stage's matrix product over a grid equals Keras' reconstruction loss, image by image."""
    from stages.lib import marginal, models

    decoder = models.load(trained["dir"] / "vae" / "decoder.keras")
    z = np.stack(np.meshgrid(np.linspace(-3, 3, 7), np.linspace(-3, 3, 7)), -1).reshape(-1, 2)
    logits, log1m = marginal.Decoder(decoder, conditional=False).grid(z)
    x = trained["x"][:5]
    got = lik.bernoulli_log_likelihood(x, logits, log1m)
    decoded = decoder.predict(z.astype(np.float32), verbose=0)
    for i in range(len(x)):
        for j in range(len(z)):
            want = -float(models.reconstruction_loss(x[i:i + 1], decoded[j:j + 1])[0])
            assert got[i, j] == pytest.approx(want, abs=0.02)


def test_the_unclipped_decoder_gives_the_exact_bernoulli_likelihood_of_the_logits() -> None:
    """Decoder(clip=False) (tools/paper_clipping.py): log p(x|z) from the logits as they are, against
    numpy on the decoder's own weights; the default clips them where Keras clips the sigmoid."""
    import keras

    from stages.lib import marginal, models

    # The weights come from Keras' global generator (build's seed is the Sampling layer's): unseeded,
    # they followed whatever the worker ran before, and |logits| stayed under 2 x LOGIT_MAX in 2 of 30 runs.
    keras.utils.set_random_seed(0)
    decoder = models.build("vae", 2, (8, 4), seed=0).decoder
    out = decoder.get_layer("pixels")
    out.kernel.assign(out.kernel * 400.0)   # logits far beyond the clip (+-16.1)
    z = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
    x = (np.random.default_rng(1).random((3, 784)) < 0.5).astype(np.float32)
    h = z.reshape(-1, 2).astype(np.float64)
    for name in ("hidden_1", "hidden_2"):
        kernel, bias = (np.asarray(w, np.float64) for w in decoder.get_layer(name).weights)
        h = np.maximum(h @ kernel + bias, 0)
    logits = (h @ np.asarray(out.kernel, np.float64) + np.asarray(out.bias, np.float64)).reshape(3, 4, -1)
    assert np.abs(logits).max() > 2 * lik.LOGIT_MAX
    exact = np.einsum("np,nkp->nk", x, logits) - lik.softplus(logits).sum(-1)
    got = marginal.Decoder(decoder, conditional=False, clip=False).pairs(x, z)
    np.testing.assert_allclose(got, exact, rtol=1e-4)
    clipped = marginal.Decoder(decoder, conditional=False).pairs(x, z)
    np.testing.assert_allclose(clipped, lik.bernoulli_log_likelihood_pairs(x, logits), rtol=1e-4)
    # The clip credits pixels the logits get wrong beyond it, and costs at most 1e-7 nats per pixel.
    assert (clipped > got + 1).any() and (clipped >= got - 784e-7 - 1e-3).all()


def test_the_gap_tools_per_image_bound_and_effective_sample_size() -> None:
    """tools/paper_gap.py: each image's IWAE-k is the mean over its disjoint groups of k of
    log mean w (written out with numpy here), the ESS share is 1 for equal weights, 1/k for one
    weight that dwarfs the rest, and the narrow-q limit starts at 0 for one sample."""
    from tools.paper_gap import effective_share, narrow_q_limit, per_image_iwae

    log_w = np.random.default_rng(0).normal(-100.0, 2.0, size=(3, 12))
    for k in (1, 4, 12):
        groups = log_w.reshape(3, 12 // k, k)
        want = (np.log(np.exp(groups - groups.max(-1, keepdims=True)).mean(-1)) + groups.max(-1)).mean(-1)
        np.testing.assert_allclose(per_image_iwae(log_w, k), want, rtol=1e-12)
    assert per_image_iwae(log_w, 12)[0] > per_image_iwae(log_w, 1)[0]  # Jensen: log of a mean >= mean of logs
    equal, one = np.zeros((1, 50)), np.full((1, 50), -1e3)
    one[0, 7] = 0.0
    np.testing.assert_allclose(effective_share(equal), [1.0])
    np.testing.assert_allclose(effective_share(one), [1 / 50])
    # The narrow-q limit: with one sample the estimator is L[q] itself (E G = d / 2); more samples lift it.
    assert abs(narrow_q_limit(2, 1)) < 0.1 and 0 < narrow_q_limit(2, 10) < narrow_q_limit(2, 100)


@pytest.mark.slow
def test_grids_that_disagree_stop_the_stage_with_one_line_and_no_file(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> None:
    """A 3-point grid against its 5-point refinement cannot agree within 1e-6 nats: the stage stops
    with the one-line error that says so and what to raise, and leaves no likelihood.json."""
    import subprocess
    import sys

    from tests.conftest import copy_of, tiny_base

    proj = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "project", mnist_dir)
    proj.set_params({"likelihood": {"grid": {"points": 3, "tolerance": 1e-6}}})
    out = proj.path / "artifacts/vae/likelihood.json"
    out.unlink()
    done = subprocess.run([sys.executable, "-m", "stages.likelihood", "vae"], cwd=proj.path, env=proj.env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: likelihood: vae: the quadrature did not converge: 3 points per axis give \S+ nats, "
                        r"5 give \S+ \(difference [+-]\S+, tolerance 1e-06\); raise likelihood.grid.points", last), last
    assert "Traceback" not in done.stderr
    assert not out.exists() and not list(out.parent.glob("*.tmp*")), sorted(p.name for p in out.parent.iterdir())
