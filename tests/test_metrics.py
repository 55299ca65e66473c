"""The evaluation metrics on small hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from stages.lib import metrics


def test_entropy_uniform_and_one_hot() -> None:
    assert metrics.entropy(np.ones(10)) == pytest.approx(math.log(10))
    assert metrics.entropy([0, 0, 7, 0]) == 0.0
    assert metrics.entropy([1, 1, 0, 0]) == pytest.approx(math.log(2))


def test_generation_scores_by_hand() -> None:
    probs = np.array([
        [0.95, 0.05] + [0] * 8,   # label 0, confident
        [0.10, 0.90] + [0] * 8,   # label 1, exactly at the threshold
        [0.40, 0.60] + [0] * 8,   # label 1, not recognisable
        [0.00, 0.00, 1.0] + [0] * 7,  # label 2
    ])
    s = metrics.generation_scores(probs, threshold=0.9)
    assert s["recognisable_share"] == 0.75
    assert s["mean_confidence"] == pytest.approx((0.95 + 0.90 + 0.60 + 1.0) / 4)
    expected_h = -(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5))  # labels 0, 1, 1, 2
    assert s["class_entropy"] == pytest.approx(expected_h)
    assert s["class_balance"] == pytest.approx(expected_h / math.log(10))
    uniform = metrics.generation_scores(np.eye(10), 0.9)
    assert uniform["class_balance"] == pytest.approx(1.0) and uniform["recognisable_share"] == 1.0


def test_knn_accuracy_toy_set() -> None:
    train = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], float)
    labels = np.array([1, 1, 1, 2, 2, 2])
    test = np.array([[0.2, 0.2], [10.2, 10.2], [6.0, 6.0]])
    assert metrics.knn_accuracy(train, labels, test, np.array([1, 2, 2]), k=3) == 1.0
    assert metrics.knn_accuracy(train, labels, test, np.array([2, 1, 1]), k=3) == 0.0
    # k = 2 with one neighbour of each label: the nearer one wins the tie.
    two = np.array([[0, 0], [3, 0]], float)
    assert metrics.knn_accuracy(two, np.array([4, 7]), np.array([[1, 0]]), np.array([4]), k=2) == 1.0
    assert metrics.knn_accuracy(two, np.array([4, 7]), np.array([[2, 0]]), np.array([7]), k=2) == 1.0
    # Chunking does not change the answer.
    rng = np.random.default_rng(0)
    tr, te = rng.normal(size=(300, 2)), rng.normal(size=(50, 2))
    ltr, lte = rng.integers(0, 10, 300), rng.integers(0, 10, 50)
    assert metrics.knn_accuracy(tr, ltr, te, lte, 5, chunk=7) == metrics.knn_accuracy(tr, ltr, te, lte, 5)


def test_latent_statistics() -> None:
    labels = np.repeat(np.arange(10), 2)
    # Digit d has codes d - 1 and d + 1: mean d, std 1 in both dimensions...
    codes = np.stack([[d - 1.0, d - 1.0] if i == 0 else [d + 1.0, d + 1.0]
                      for d in range(10) for i in range(2)])
    codes[18:, 1] = [-3.0, 3.0]  # ...except digit 9 in dimension 1: mean 0, std 3
    s = metrics.latent_statistics(codes, labels)
    assert s["per_digit"]["3"] == {"mean_dim_0": 3.0, "mean_dim_1": 3.0, "std_dim_0": 1.0, "std_dim_1": 1.0}
    assert s["per_digit"]["9"]["std_dim_1"] == 3.0 and s["per_digit"]["9"]["mean_dim_1"] == 0.0
    stds_dim_1 = np.array([1.0] * 9 + [3.0])
    assert s["std_spread"] == pytest.approx((0 + stds_dim_1.std() / stds_dim_1.mean()) / 2)
    assert s["std_ratio"] == pytest.approx((1 + 3) / 2)
