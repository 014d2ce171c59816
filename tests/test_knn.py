"""`probing.knn_votes` / `knn_metrics` (DINO's weighted k-NN) against a
brute-force NumPy k-NN written here: float64 cosine similarities, a full
stable sort of every test row, votes `exp(similarity / T)` summed per
class."""

import doctest

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_aim import probing
from keras_aim.probing import knn


def brute_force_votes(train, labels, test, num_classes, k, temperature):
    """Votes of every test row, one row at a time, in float64."""
    train = np.asarray(train, "float64").reshape(len(train), -1)
    test = np.asarray(test, "float64").reshape(len(test), -1)
    train = train / np.maximum(
        np.linalg.norm(train, axis=1, keepdims=True), 1e-12
    )
    test = test / np.maximum(np.linalg.norm(test, axis=1, keepdims=True), 1e-12)
    votes = np.zeros((len(test), num_classes))
    for row, query in enumerate(test):
        similarity = train @ query
        # Most similar first; the lower training index first among equals.
        order = np.lexsort((np.arange(len(train)), -similarity))
        for index in order[: min(k, len(train))]:
            votes[row, labels[index]] += np.exp(similarity[index] / temperature)
    return votes


def brute_force_topk(votes, labels, k):
    hits = []
    for row, label in zip(votes, labels):
        ranked = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits.append(label in ranked[:k])
    return float(np.mean(hits))


def features(seed, num, dim=6, classes=4):
    rng = np.random.RandomState(seed)
    centres = rng.randn(classes, dim) * 2
    labels = rng.randint(0, classes, num)
    return (centres[labels] + rng.randn(num, dim)).astype("float32"), labels


@pytest.mark.parametrize("k", [1, 3, 20, 40, 500])
def test_votes_and_accuracy_match_brute_force(k):
    x, y = features(0, 40)
    tx, ty = features(1, 25)
    tx = tx[:, ::-1].copy()  # some mistakes, so accuracies are not all 1
    votes = probing.knn_votes(x, y, tx, num_classes=4, k=k, temperature=0.07)
    expected = brute_force_votes(x, y, tx, 4, k, 0.07)
    assert votes.shape == (25, 4) and votes.dtype == np.float64
    np.testing.assert_allclose(votes, expected, rtol=2e-5)
    metrics = probing.knn_metrics(x, y, tx, ty, num_classes=4, k=k)
    assert metrics["top1"] == brute_force_topk(expected, ty, 1)
    assert metrics["top5"] == brute_force_topk(expected, ty, 4)
    assert 0 < metrics["top1"] < 1
    assert metrics["k"] == min(k, 40) and metrics["num_train"] == 40
    assert metrics["num_test"] == 25 and metrics["temperature"] == 0.07
    confusion = np.zeros((4, 4), "int64")
    for label, row in zip(ty, expected):
        confusion[label, np.argmax(row)] += 1
    np.testing.assert_array_equal(metrics["confusion"], confusion)


def test_top5_of_many_classes():
    x, y = features(2, 90, dim=8, classes=9)
    tx, ty = features(3, 30, dim=8, classes=9)
    tx = tx + np.random.RandomState(4).randn(*tx.shape).astype("float32") * 3
    metrics = probing.knn_metrics(x, y, tx, ty, k=7, temperature=0.5)
    expected = brute_force_votes(x, y, tx, 9, 7, 0.5)
    assert metrics["top1"] == brute_force_topk(expected, ty, 1)
    assert metrics["top5"] == brute_force_topk(expected, ty, 5)
    assert metrics["top1"] < metrics["top5"]


def test_default_is_dino_k20_t007():
    assert knn.DEFAULT_K == 20 and knn.DEFAULT_TEMPERATURE == 0.07
    x, y = features(5, 60)
    tx, _ = features(6, 10)
    np.testing.assert_allclose(
        probing.knn_votes(x, y, tx),
        brute_force_votes(x, y, tx, 4, 20, 0.07),
        rtol=2e-5,
    )


def test_chunking_gives_the_same_answer():
    x, y = features(7, 50)
    tx, _ = features(8, 33)
    whole = probing.knn_votes(x, y, tx, k=5)
    for budget in (1, 25 * 50 * 4, 25 * 50 * 7 + 3):  # 1, 4 and 7 rows
        chunked = probing.knn_votes(x, y, tx, k=5, max_chunk_bytes=budget)
        # The same neighbours; BLAS may round a float32 similarity of a
        # row differently in a chunk of another height (~1e-7).
        np.testing.assert_allclose(chunked, whole, rtol=1e-5)
        np.testing.assert_array_equal(chunked > 0, whole > 0)
        np.testing.assert_array_equal(
            np.argmax(chunked, 1), np.argmax(whole, 1)
        )


def test_neighbour_ties_take_the_lower_training_index():
    # Six copies of one direction (float32-exact similarity 1 to the
    # query), labelled 0, 1, 2, 0, 1, 2, and a far example of class 3.
    bank = np.array([[1.0, 0.0]] * 6 + [[0.0, 1.0]], "float32")
    labels = np.array([0, 1, 2, 0, 1, 2, 3])
    votes = probing.knn_votes(bank, labels, [[2.0, 0.0]], k=2)
    # k=2 takes training examples 0 and 1: one vote each for classes 0, 1.
    np.testing.assert_allclose(
        votes[0], [np.exp(1 / 0.07), np.exp(1 / 0.07), 0, 0], rtol=1e-6
    )
    votes = probing.knn_votes(bank, labels, [[2.0, 0.0]], k=4)
    np.testing.assert_allclose(
        votes[0] / np.exp(1 / 0.07), [2, 1, 1, 0], rtol=1e-6
    )


def test_class_ties_rank_the_lower_class_first():
    bank = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], "float32")
    labels = np.array([2, 1, 0])
    # Classes 1 and 2 tie (one identical neighbour each): class 1 first.
    metrics = probing.knn_metrics(bank, labels, [[3.0, 0.0]], [1], k=2)
    assert metrics["top1"] == 1.0
    metrics = probing.knn_metrics(bank, labels, [[3.0, 0.0]], [2], k=2)
    assert metrics["top1"] == 0.0 and metrics["top5"] == 1.0


def test_zero_rows_and_multi_axis_features():
    x = np.zeros((4, 2, 3), "float32")
    x[1:, 0, 0] = [1, 2, 3]
    votes = probing.knn_votes(x, [0, 1, 1, 1], np.ones((2, 2, 3)), k=4)
    s = 1 / np.sqrt(6)  # cosine of e_0 and the all-ones vector
    np.testing.assert_allclose(
        votes, [[1.0, 3 * np.exp(s / 0.07)]] * 2, rtol=1e-5
    )


def test_bfloat16_features_are_taken():
    import ml_dtypes

    x, y = features(9, 20)
    tx, _ = features(10, 5)
    low = x.astype(ml_dtypes.bfloat16)
    votes = probing.knn_votes(low, y, tx.astype(ml_dtypes.bfloat16), k=3)
    expected = brute_force_votes(
        low.astype("float64"), y, tx.astype(ml_dtypes.bfloat16), 4, 3, 0.07
    )
    np.testing.assert_allclose(votes, expected, rtol=2e-5)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    num_train=st.integers(1, 30),
    num_test=st.integers(1, 12),
    k=st.integers(1, 35),
    temperature=st.sampled_from([0.02, 0.07, 1.0, 10.0]),
)
def test_any_size_matches_brute_force(
    seed, num_train, num_test, k, temperature
):
    rng = np.random.RandomState(seed)
    x = rng.randn(num_train, 5).astype("float32")
    y = rng.randint(0, 3, num_train)
    tx = rng.randn(num_test, 5).astype("float32")
    votes = probing.knn_votes(x, y, tx, 3, k, temperature, max_chunk_bytes=300)
    expected = brute_force_votes(x, y, tx, 3, k, temperature)
    np.testing.assert_allclose(votes, expected, rtol=1e-4)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(k=0), "k"),
        (dict(k=2.5), "k"),
        (dict(temperature=0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature="hot"), "temperature"),
        (dict(max_chunk_bytes=0), "max_chunk_bytes"),
        (dict(num_classes=2), r"outside \[0, 2\)"),
        (dict(train_labels=[0, 1, 2]), "one label per training example"),
        (dict(train_labels=[0.0, 1.0, 2.0, 0.0]), "must be integers"),
        (dict(train_labels=[0, -1, 2, 0]), r"outside \[0, 3\)"),
        (dict(test_features=np.ones((2, 3))), "same size per example"),
        (dict(train_features=np.ones((0, 2))), "at least one example"),
        (dict(train_features=np.full((4, 2), np.nan)), "NaN or infinite"),
        (dict(test_features=[["a", "b"]]), "must be numbers"),
    ],
)
def test_bad_arguments_are_refused(change, match):
    arguments = dict(
        train_features=np.eye(4, 2, dtype="float32"),
        train_labels=[0, 1, 2, 0],
        test_features=np.ones((2, 2), "float32"),
    )
    arguments.update(change)
    with pytest.raises(ValueError, match=match):
        probing.knn_votes(**arguments)


def test_bad_test_labels_are_refused():
    bank = np.eye(3, dtype="float32")
    with pytest.raises(ValueError, match="one label per test example"):
        probing.knn_metrics(bank, [0, 1, 2], bank, [0, 1])


def test_docstring_example_runs():
    result = doctest.testmod(knn, extraglobs={"np": np})
    assert result.attempted >= 2 and result.failed == 0
