"""Few labels: `probing.class_balanced_subset` (exact label subsets),
`probing.label_efficiency` (the curve) and
`probing.logistic_regression_scores` (against scikit-learn directly)."""

import doctest
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_aim import probing


def labels_with_counts(counts, seed=0):
    labels = np.repeat(np.arange(len(counts)), counts)
    return labels[np.random.RandomState(seed).permutation(len(labels))]


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    wanted=st.integers(1, 30),
    seed=st.integers(0, 2**31),
)
def test_exactly_n_of_every_class(counts, wanted, seed):
    labels = labels_with_counts(counts, seed % 7)
    if wanted > min(counts):
        with pytest.raises(ValueError, match="has only"):
            probing.class_balanced_subset(labels, wanted, seed)
        return
    subset = probing.class_balanced_subset(labels, wanted, seed)
    assert subset.dtype == np.int64
    assert len(subset) == wanted * len(counts) == len(set(subset.tolist()))
    assert list(subset) == sorted(subset)
    np.testing.assert_array_equal(
        np.bincount(labels[subset], minlength=len(counts)),
        [wanted] * len(counts),
    )


def test_a_seed_gives_one_subset_and_draws_differ():
    labels = labels_with_counts([50] * 10)
    first = probing.class_balanced_subset(labels, 5, seed=3)
    np.testing.assert_array_equal(
        first, probing.class_balanced_subset(labels, 5, seed=3)
    )
    draws = {
        tuple(probing.class_balanced_subset(labels, 5, seed=[3, d]))
        for d in range(5)
    }
    assert len(draws) == 5


def test_subsets_of_one_seed_are_nested():
    labels = labels_with_counts([30] * 4)
    previous = set()
    for n in (1, 2, 5, 10, 20, 30):
        subset = set(probing.class_balanced_subset(labels, n, 7).tolist())
        assert previous <= subset
        previous = subset
    assert previous == set(range(120))


def test_the_draw_is_a_seeded_permutation_per_class():
    # Written out independently: classes in order, one permutation each.
    labels = labels_with_counts([6, 9, 4], seed=2)
    rng = np.random.RandomState([11, 2])
    expected = []
    for label in range(3):
        members = np.flatnonzero(labels == label)
        expected += members[rng.permutation(len(members))[:3]].tolist()
    subset = probing.class_balanced_subset(labels, 3, seed=[11, 2])
    assert subset.tolist() == sorted(expected)


@pytest.mark.parametrize("every", [None, 0])
def test_every_label(every):
    labels = labels_with_counts([3, 1, 2])
    subset = probing.class_balanced_subset(labels, every, seed=1)
    assert subset.tolist() == list(range(6))


def test_a_small_class_is_refused_clearly():
    labels = labels_with_counts([10, 10, 3, 10])
    message = (
        r"`labels_per_class`=5 but class 2 has only 3 examples; pass "
        r"labels_per_class <= 3 \(the smallest class\) or 0"
    )
    with pytest.raises(ValueError, match=message):
        probing.class_balanced_subset(labels, 5)
    with pytest.raises(ValueError, match="class 4 has only 0"):
        probing.class_balanced_subset(labels, 1, num_classes=5)


@pytest.mark.parametrize(
    "args,match",
    [
        (([0, 1], -1), "labels_per_class"),
        (([0, 1], 1.5), "labels_per_class"),
        (([0, 1], True), "labels_per_class"),
        (([], 1), "non-empty 1-D array"),
        (([0.0, 1.0], 1), "integer labels"),
        (([[0, 1]], 1), "non-empty 1-D array"),
        (([0, 1], 1, -3), "seed"),
        (([0, 1], 1, "a"), "seed"),
        (([0, 1], 1, []), "seed"),
        (([0, 3], 1, 0, 2), r"outside \[0, 2\)"),
        (([0, -1], 1), r"outside \[0, 1\)"),
    ],
)
def test_bad_arguments_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        probing.class_balanced_subset(*args)


def separable(seed, per_class, classes=4, dim=10, noise=1.2):
    rng = np.random.RandomState(seed)
    centres = np.random.RandomState(99).randn(classes, dim) * 1.5
    labels = np.repeat(np.arange(classes), per_class)
    x = centres[labels] + noise * rng.randn(len(labels), dim)
    return x.astype("float32"), labels


def nearest_mean(x, y, test_x, classes=4):
    def fit_predict(indices, draw):
        means = np.stack(
            [x[indices][y[indices] == c].mean(0) for c in range(classes)]
        )
        return -((test_x[:, None] - means) ** 2).sum(-1)

    return fit_predict


def test_the_curve_trains_every_classifier_on_the_same_draws():
    x, y = separable(0, 40)
    test_x, test_y = separable(1, 25)
    seen = []

    def recorder(indices, draw):
        seen.append((tuple(indices), draw))
        assert indices.max() < len(y)  # only training examples
        return np.tile(np.eye(4)[0], (len(test_y), 1))  # always class 0

    curve = probing.label_efficiency(
        {"means": nearest_mean(x, y, test_x), "constant": recorder},
        y,
        test_y,
        labels_per_class=(1, 5, None),
        draws=3,
        seed=4,
    )
    assert curve["labels_per_class"] == [1, 5, "all"]
    assert curve["num_train"] == [4, 20, 160]
    assert curve["draws"] == 3 and curve["seed"] == 4
    assert set(curve["methods"]) == {"means", "constant"}
    expected = [
        (tuple(probing.class_balanced_subset(y, n, [4, d])), d)
        for n, draws in ((1, 3), (5, 3), (None, 1))
        for d in range(draws)
    ]
    assert seen == expected
    constant = curve["methods"]["constant"]
    assert constant["top1"] == [[0.25] * 3, [0.25] * 3, [0.25]]
    assert constant["top1_mean"] == [0.25] * 3
    assert constant["top1_std"] == [0.0] * 3
    assert constant["top5_mean"] == [1.0] * 3  # 4 classes: top-4
    means = curve["methods"]["means"]
    assert [len(t) for t in means["top1"]] == [3, 3, 1]
    for per_draw, mean, std in zip(
        means["top1"], means["top1_mean"], means["top1_std"]
    ):
        assert mean == pytest.approx(np.mean(per_draw))
        assert std == pytest.approx(np.std(per_draw))
    # More labels help on average, and every label is nearly perfect.
    assert means["top1_mean"][0] < means["top1_mean"][1] <= 1.0
    assert means["top1_mean"][2] >= 0.95


def test_the_curve_refuses_bad_arguments():
    x, y = separable(0, 5)
    fit = nearest_mean(x, y, x)
    with pytest.raises(ValueError, match="non-empty dict"):
        probing.label_efficiency({}, y, y)
    with pytest.raises(ValueError, match="draws"):
        probing.label_efficiency({"m": fit}, y, y, draws=0)
    with pytest.raises(ValueError, match="list or tuple of points"):
        probing.label_efficiency({"m": fit}, y, y, labels_per_class=5)
    with pytest.raises(ValueError, match="at least one point"):
        probing.label_efficiency({"m": fit}, y, y, labels_per_class=())
    with pytest.raises(ValueError, match="class 0 has only 5"):
        probing.label_efficiency({"m": fit}, y, y, labels_per_class=(6,))
    with pytest.raises(ValueError, match=r"scores of shape \(20, 3\)"):
        probing.label_efficiency(
            {"m": lambda i, d: np.zeros((20, 3))}, y, y, labels_per_class=(1,)
        )


def test_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = separable(2, 30, classes=3)
    test_x, _ = separable(3, 10, classes=3)
    scores = probing.logistic_regression_scores(x, y, test_x, 3)
    scaler = StandardScaler().fit(x.astype("float64"))
    model = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(x), y)
    expected = model.predict_proba(scaler.transform(test_x))
    assert scores.shape == (30, 3) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-9)


def test_logistic_regression_leaves_classes_it_never_saw_at_zero():
    x, y = separable(2, 10, classes=3)
    keep = y != 1
    scores = probing.logistic_regression_scores(
        x[keep].reshape(-1, 2, 5), y[keep], x.reshape(-1, 2, 5), 4
    )
    assert scores.shape == (30, 4)
    np.testing.assert_array_equal(scores[:, [1, 3]], 0.0)
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-9)


def test_docstring_example_runs():
    result = doctest.testmod(sys.modules["keras_aim.probing.label_efficiency"])
    assert result.attempted >= 1 and result.failed == 0


def test_the_plot_draws_every_arm_and_refuses_mismatched_points(tmp_path):
    from keras_aim.utils import plots

    x, y = separable(0, 10)
    test_x, test_y = separable(1, 5)
    curve = probing.label_efficiency(
        {"means": nearest_mean(x, y, test_x)},
        y,
        test_y,
        labels_per_class=(1, 2, None),
        draws=2,
    )
    path = str(tmp_path / "curve.png")
    assert plots.plot_label_efficiency({"a": curve, "b": curve}, path) == path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    other = {**curve, "labels_per_class": [1, 5, "all"]}
    with pytest.raises(ValueError, match="same points"):
        plots.plot_label_efficiency({"a": curve, "b": other}, path)
    with pytest.raises(ValueError, match="empty"):
        plots.plot_label_efficiency({}, path)
