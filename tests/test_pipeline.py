"""The real DVC CLI on a temporary copy of the project."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import Project, copy_of, ran, tiny_base


def lock(project: Project) -> dict:
    return yaml.safe_load((project.path / "dvc.lock").read_text())


def test_repro_fetch_then_nothing_to_do(project: Project, serve, mnist_dir) -> None:
    out = project.dvc("repro", "fetch").stdout
    assert "Running stage 'fetch'" in out
    assert (project.path / "data/mnist.npz").exists()
    assert "up to date" in project.dvc("status", "fetch").stdout
    again = project.dvc("repro", "fetch").stdout
    assert "Running stage" not in again and "didn't change, skipping" in again
    md5 = lock(project)["stages"]["fetch"]["outs"][0]["md5"]

    # Where the files come from does not change the output: force a run from HTTP.
    env = dict(project.env, MNIST_MIRROR=serve(mnist_dir).url)
    project.dvc("repro", "-f", "fetch", env=env)
    assert lock(project)["stages"]["fetch"]["outs"][0]["md5"] == md5


# --- the whole pipeline, tiny ----------------------------------------------------------



@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Project:
    """A copy of the session's tiny project (tiny params, fully reproduced, committed)."""
    return copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path_factory.mktemp("tiny") / "project", mnist_dir)


def would_run(project: Project, changes: dict) -> set[str]:
    """The stages `dvc repro --dry` would run after ``changes`` to params.yaml (then restored)."""
    project.set_params(changes)
    try:
        out = project.dvc("repro", "--dry").stdout
    finally:
        project.git("checkout", "params.yaml")
    return ran(out)


LIKELIHOOD = {"likelihood@vae", "likelihood@cvae", "likelihood@beta_sweep"}
EVOLUTION = {"evolution@ae", "evolution@vae", "evolution@cvae"}
COMPUTING = {"train@ae", "train@vae", "train@cvae", "train_classifier", "plot_samples", "beta_sweep",
             "plot_beta_sweep", "explore", "animate", *LIKELIHOOD, *EVOLUTION,
             *(f"{s}@{m}" for s in ("encode", "generate", "plot", "evaluate") for m in ("ae", "vae", "cvae"))}


def finite_numbers(data: object, where: str = "") -> list[tuple[str, float]]:
    """Every number in a JSON document with its dotted key; fails on anything but numbers, dicts and lists."""
    if isinstance(data, dict):
        return [kv for k, v in data.items() for kv in finite_numbers(v, f"{where}.{k}".lstrip("."))]
    if isinstance(data, list):
        return [kv for i, v in enumerate(data) for kv in finite_numbers(v, f"{where}[{i}]")]
    assert isinstance(data, (int, float)) and not isinstance(data, bool), f"{where}: {data!r}"
    assert math.isfinite(data), f"{where}: {data}"
    return [(where, float(data))]


def five_nn_accuracy(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray) -> float:
    """A 5-nearest-neighbour vote written apart from stages/lib/metrics.py: squared distances by
    differences, the five nearest as a stable sort orders them (equal distances: lower index first),
    the most votes winning; a tie goes to the tied label whose voters' ranks (5 for the nearest, 1 for
    the fifth) sum higher, then to the smaller digit: evaluate's rule."""
    correct, train, chunk = 0, train.astype(np.float64), 100  # 100 rows: 48 MB of distances, not 480 MB
    for i in range(0, len(test), chunk):
        q = test[i:i + chunk].astype(np.float64)
        d = sum((q[:, j, None] - train[None, :, j]) ** 2 for j in range(q.shape[1]))
        # Only the points as near as the fifth nearest are sorted (ties at the fifth kept): the first
        # five of a stable sort of all 60 000 (measured on the Zen 4: 10 CPU-s per model against 100).
        fifth = np.partition(d, 4, axis=1)[:, 4]
        for row_d, limit, label in zip(d, fifth, test_labels[i:i + chunk]):
            near = np.flatnonzero(row_d <= limit)
            assert len(near) >= 5, (limit, len(near))
            row = near[np.argsort(row_d[near], kind="stable")][:5]
            voters = [int(c) for c in train_labels[row]]
            score = {c: (voters.count(c), sum(5 - r for r, v in enumerate(voters) if v == c), -c) for c in voters}
            correct += max(score, key=score.get) == label
    return correct / len(test)


def untrained_reconstruction(project: Project, kind: str, x: np.ndarray, y: np.ndarray) -> float:
    """Test reconstruction (nats/image) on test images ``x`` (flat) with labels ``y`` of ``kind``'s
    architecture with its initial weights (the params' seed), by a binary cross-entropy written
    here: what a training that learns nothing would report."""
    import keras

    from stages.lib import models
    p = yaml.safe_load((project.path / "params.yaml").read_text())
    keras.utils.set_random_seed(p[kind]["seed"])  # the decoder's initial weights too: the same value each run
    model = models.build(kind, p[kind]["latent_dim"], tuple(p[kind]["hidden"]), seed=p[kind]["seed"])
    label = [models.one_hot(y)] if kind == "cvae" else []
    z = model.encoder.predict([x, *label] if label else x, batch_size=2000, verbose=0)
    z = z if kind == "ae" else z[0]  # z_mean
    out = np.clip(model.decoder.predict([z, *label] if label else z, batch_size=2000, verbose=0), 1e-7, 1 - 1e-7)
    return float(-(x * np.log(out) + (1 - x) * np.log(1 - out)).sum(axis=1).mean())


@pytest.mark.slow
def test_tiny_pipeline_produces_every_declared_output(tiny: Project) -> None:
    stages = lock(tiny)["stages"]
    assert set(stages) == COMPUTING | {"fetch", "compare"}
    for name, stage in stages.items():
        for out in stage.get("outs", []):
            assert (tiny.path / out["path"]).exists(), f"{name}: {out['path']} missing"
    for png in (tiny.path / "artifacts").rglob("*.png"):
        assert png.stat().st_size < 500_000, png
    assert (tiny.path / "artifacts/evolution.gif").stat().st_size < 2_000_000
    assert "up to date" in tiny.dvc("status").stdout
    # Committed for review: metrics, history and figures; cached, so git-ignored: models and arrays.
    tracked = tiny.git("ls-files", "artifacts").stdout.split()
    assert "artifacts/vae/metrics.json" in tracked and "artifacts/ae/manifold.png" in tracked
    assert "artifacts/vae/evolution.tsv" in tracked and "artifacts/evolution.gif" in tracked
    assert not [t for t in tracked if t.endswith((".keras", ".npz", ".npy"))]

    # The numbers: every key the README and compare read, finite, shares in [0, 1].
    art = tiny.path / "artifacts"
    from stages.lib import mnist
    _, _, x_test, y_test = mnist.load(tiny.path / "data/mnist.npz")  # for the untrained baselines
    x_test = x_test.reshape(len(x_test), -1)
    for m in ("ae", "vae", "cvae"):
        evaluation = json.loads((art / m / "evaluation.json").read_text())
        numbers = dict(finite_numbers(evaluation))
        for part in ("grid", "samples"):
            for key in ("recognisable_share", "class_balance", "mean_confidence"):
                assert 0 <= numbers[f"{part}.{key}"] <= 1, (m, part, key)
        # The 5-NN accuracy again, by an independent vote (a full sort, ties to the nearest tied
        # label), and above chance (0.10 +- 0.003 for 10 000 test images): a constant or shuffled code fails.
        enc = np.load(art / m / "encodings.npz", allow_pickle=False)
        point = "z" if m == "ae" else "z_mean"
        assert numbers["knn_accuracy"] == pytest.approx(
            five_nn_accuracy(enc[f"{point}_train"], enc["y_train"], enc[f"{point}_test"], enc["y_test"]), abs=2e-3)
        assert numbers["knn_accuracy"] > 0.12, (m, numbers["knn_accuracy"])
        assert {"latent.std_spread", "latent.std_ratio"} <= set(numbers)
        assert ("conditional_accuracy" in numbers) == (m == "cvae")
        metrics = dict(finite_numbers(json.loads((art / m / "metrics.json").read_text())))
        assert "test_reconstruction" in metrics and ("test_neg_elbo" in metrics) == (m != "ae")
        # Training learned: the tiny models reconstruct at about 231 nats/image, the same networks
        # untrained at about 543 (784 ln 2: every pixel 0.5). A step that updates nothing stays there.
        # (Not the kNN: an untrained encoder's 5-NN, 0.18-0.21 here, matches the tiny trained ones'.)
        untrained = untrained_reconstruction(tiny, m, x_test, y_test)
        assert metrics["test_reconstruction"] <= 0.6 * untrained, (m, metrics["test_reconstruction"], untrained)
    sweep = json.loads((art / "beta_sweep/metrics.json").read_text())
    assert set(sweep) == {"beta_2"}  # TINY's one beta
    point = dict(finite_numbers(sweep["beta_2"]))
    assert point["beta"] == 2 and point["test_neg_elbo"] == pytest.approx(point["test_reconstruction"]
                                                                          + point["test_kl"], abs=2e-4)
    assert all(0 <= point[f"samples.{k}"] <= 1 for k in ("recognisable_share", "class_balance"))
    assert sorted(p.name for p in (art / "beta_sweep/models").iterdir()) == ["beta_2"]
    # comparison.md: a number in every cell but the two that do not apply (the AE's KL and -ELBO,
    # conditional accuracy of the unconditional models).
    rows = [line.split("|")[1:-1] for line in (art / "comparison.md").read_text().splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert rows
    for label, *cells, _note in rows:
        label = label.strip()
        allowed = {"test KL (nats/image)": [0], "test negative ELBO (nats/image)": [0],
                   "conditional accuracy": [0, 1]}.get(label, [0] if label.startswith("likelihood") else [])
        for i, cell in enumerate(cells):
            if i in allowed:
                assert cell.strip() == "–", (label, i, cell)
            else:
                assert math.isfinite(float(cell)), (label, i, cell)


# Each edit and the stages it affects directly: exactly those that read the key (a dry run
# lists only them, not the stages downstream, whose inputs have not changed yet). Which stage reads
# which key is checked for every key and stage, from the code, by tests/test_map.py; these few real
# dry runs check that DVC reads dvc.yaml's declarations as that test does: a key read by a stage of
# each kind (data), a key inside one foreach item's block (generate.cvae), and the `compute` key that
# stages.lib.run reads for every stage that computes.
DIRECT = [
    ({"data": {"binarize": "dynamic"}}, {"train@ae", "train@vae", "train@cvae", "beta_sweep",
                                         "encode@ae", "encode@vae", "encode@cvae", *LIKELIHOOD, *EVOLUTION,
                                         "explore"}),
    ({"generate": {"cvae": {"digit": 3}}}, {"generate@cvae", "plot@cvae"}),
    ({"compute": {"portable": False}}, COMPUTING),
]


@pytest.mark.slow
@pytest.mark.parametrize("changes, direct", DIRECT)
def test_param_edits_rerun_exactly_the_stages_that_read_them(tiny: Project, changes: dict,
                                                             direct: set[str]) -> None:
    assert would_run(tiny, changes) == direct


# Stages that another test already runs a second time and compares byte for byte with the first:
# the forced rerun below leaves them out.
RERUN_ELSEWHERE = {
    "fetch": "test_repro_fetch_then_nothing_to_do: forced from HTTP, the same md5",
    "train@vae": "tests/test_binarize.py: forced, the same encoder.keras and metrics (dynamic binarization)",
    "likelihood@vae": "tests/test_binarize.py: forced, the same likelihood.json",
    "beta_sweep": "tests/test_sweep.py: beta 2 in a pool of two, the bytes of this pipeline's own run",
    "explore": "tests/test_explorer.py: test_page_is_byte_reproducible",
    "animate": "tests/test_evolution.py: forced, the same GIF",
}


@pytest.mark.slow
def test_forced_repro_gives_an_identical_lock(tiny: Project) -> None:
    before = (tiny.path / "dvc.lock").read_text()
    stages = lock(tiny)["stages"]
    assert set(RERUN_ELSEWHERE) <= set(stages)
    again = sorted(set(stages) - set(RERUN_ELSEWHERE))
    out = tiny.dvc("repro", "-f", "-s", *again).stdout  # each stage alone: the same inputs, the same bytes
    assert ran(out) == set(again), out[-3000:]
    assert (tiny.path / "dvc.lock").read_text() == before
    assert tiny.git("status", "--porcelain").stdout == ""  # committed figures and metrics unchanged too
