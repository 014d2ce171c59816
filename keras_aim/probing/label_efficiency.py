"""Few labels: class-balanced label subsets and the label-efficiency curve.

Self-supervised features are judged by what they buy when labels are few:
a classifier trained on 1, 2, 5, 10, 20 labels per class and on all of
them, several random draws of the labelled examples per point. Every
classifier here works on features computed once (cached), so a curve of
many points and draws costs only the classifiers' training.
"""

import numbers

import numpy as np

from keras_aim.probing.metrics import check_labels
from keras_aim.probing.metrics import classification_metrics
from keras_aim.utils.validation import positive_int

# The points of the curve: labels per class; `None` is every label.
LABELS_PER_CLASS = (1, 2, 5, 10, 20, None)


def _seed(seed):
    """An int or a sequence of ints >= 0, as `np.random.RandomState` takes."""
    values = seed if isinstance(seed, (tuple, list)) else [seed]
    if not values or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0
        for v in values
    ):
        raise ValueError(
            "`seed` must be an integer >= 0 or a list of them; got "
            f"seed={seed!r}."
        )
    return [int(v) for v in values]


def check_labels_per_class(labels_per_class):
    """`None` for every label (`None` or 0), else a positive int."""
    if labels_per_class is None or (
        isinstance(labels_per_class, numbers.Integral)
        and not isinstance(labels_per_class, bool)
        and labels_per_class == 0
    ):
        return None
    return positive_int(labels_per_class, "labels_per_class")


def class_balanced_subset(labels, labels_per_class, seed=0, num_classes=None):
    """Indices of exactly `labels_per_class` examples of every class.

    Each class's examples are put in an order drawn from
    `np.random.RandomState(seed)` (classes in label order) and the first
    `labels_per_class` are taken, so for one seed the subsets are nested:
    the 1-per-class examples are among the 2-per-class ones, and so on.

    Args:
        labels: `(N,)` integer labels of the set to draw from.
        labels_per_class: int, or `None`/0 for every example.
        seed: int (or a list of ints), the draw.
        num_classes: int; every class in `[0, num_classes)` must have
            `labels_per_class` examples. Defaults to `max(labels) + 1`.

    Returns:
        Sorted int64 indices into `labels`, `labels_per_class * num_classes`
        of them (all `N` for `None`).

    Raises:
        ValueError: a class has fewer than `labels_per_class` examples
            (naming it and its count), or a bad argument.

    Example:

    >>> class_balanced_subset([0, 1, 0, 1, 1], 1, seed=0).tolist()
    [0, 3]
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not len(labels) or labels.dtype.kind not in "iu":
        raise ValueError(
            "`labels` must be a non-empty 1-D array of integer labels; got "
            f"shape {labels.shape} and dtype {labels.dtype}."
        )
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    num_classes = positive_int(num_classes, "num_classes")
    check_labels(labels, num_classes)
    count = check_labels_per_class(labels_per_class)
    rng = np.random.RandomState(_seed(seed))
    if count is None:
        return np.arange(len(labels), dtype="int64")
    chosen = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        if len(members) < count:
            raise ValueError(
                f"`labels_per_class`={count} but class {label} has only "
                f"{len(members)} examples; pass labels_per_class <= "
                f"{min(np.bincount(labels, minlength=num_classes))} (the "
                "smallest class) or 0 for every label."
            )
        chosen.append(members[rng.permutation(len(members))[:count]])
    return np.sort(np.concatenate(chosen)).astype("int64")


def logistic_regression_scores(train_x, train_y, test_x, num_classes):
    """Class probabilities of a logistic regression on standardised
    features (scikit-learn: `StandardScaler`, then `LogisticRegression(
    C=0.1, max_iter=2000)`), the raw-pixel baseline's model.

    The fit runs on one BLAS/OpenMP thread: on a busy machine, more
    threads made these small problems ~40x slower, with the same result.

    Returns:
        float64 `(M, num_classes)`; a class absent from `train_y` gets 0.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    train_x = np.asarray(train_x, "float64").reshape(len(train_x), -1)
    test_x = np.asarray(test_x, "float64").reshape(len(test_x), -1)
    with threadpool_limits(1):
        scaler = StandardScaler().fit(train_x)
        model = LogisticRegression(max_iter=2000, C=0.1)
        model.fit(scaler.transform(train_x), np.asarray(train_y))
        probabilities = model.predict_proba(scaler.transform(test_x))
    scores = np.zeros((len(test_x), num_classes), "float64")
    scores[:, model.classes_] = probabilities
    return scores


def label_efficiency(
    classifiers,
    train_labels,
    test_labels,
    num_classes=None,
    labels_per_class=LABELS_PER_CLASS,
    draws=5,
    seed=0,
):
    """Test accuracy of classifiers trained on few labels per class.

    For each point `n` of `labels_per_class` and each draw `d`, the same
    labelled subset (`class_balanced_subset(train_labels, n, seed=[seed,
    d])`) is given to every classifier. The point of every label (`None`)
    has a single draw: its subset is the whole set.

    Args:
        classifiers: `{name: fit_predict}`; `fit_predict(indices, draw)`
            trains on the training examples at `indices` and returns the
            test set's scores `(M, num_classes)` (higher is more likely).
        train_labels: `(N,)` labels of the training set.
        test_labels: `(M,)` labels of the test set.
        num_classes: int; defaults to `max(train_labels) + 1`.
        labels_per_class: the points; ints > 0, and `None` (or 0) for all.
        draws: int, random subsets per point.
        seed: int, the draws' base seed.

    Returns:
        `{"labels_per_class": [n or "all", ...], "num_train": [...],
        "draws": draws, "seed": seed, "methods": {name: {"top1": [[per
        draw] per point], "top5": ..., "top1_mean": [...], "top1_std":
        [...], "top5_mean": [...]}}}`; accuracies in [0, 1], std over
        draws (0 for one draw).

    Example:

    ```python
    def nearest_mean(indices, draw):
        means = np.stack([x[indices][y[indices] == c].mean(0) for c in
                          range(10)])
        return -((test_x[:, None] - means) ** 2).sum(-1)

    curve = label_efficiency({"nearest mean": nearest_mean}, y, test_y)
    ```
    """
    if not isinstance(classifiers, dict) or not classifiers:
        raise ValueError(
            "`classifiers` must be a non-empty dict {name: fit_predict}; "
            f"got {classifiers!r}."
        )
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    if num_classes is None:
        num_classes = int(np.max(train_labels)) + 1
    draws = positive_int(draws, "draws")
    seed = _seed(seed)
    if not isinstance(labels_per_class, (list, tuple)):
        raise ValueError(
            "`labels_per_class` must be a list or tuple of points (ints > 0, "
            f"None or 0 for every label); got {labels_per_class!r}."
        )
    points = [check_labels_per_class(n) for n in labels_per_class]
    if not points:
        raise ValueError("`labels_per_class` must name at least one point.")
    result = {
        "labels_per_class": [n if n is not None else "all" for n in points],
        "num_train": [],
        "draws": draws,
        "seed": seed[0] if len(seed) == 1 else seed,
        "methods": {name: {"top1": [], "top5": []} for name in classifiers},
    }
    for count in points:
        subsets = [
            class_balanced_subset(
                train_labels, count, seed + [draw], num_classes
            )
            for draw in range(1 if count is None else draws)
        ]
        result["num_train"].append(int(len(subsets[0])))
        for name, fit_predict in classifiers.items():
            top1, top5 = [], []
            for draw, indices in enumerate(subsets):
                scores = np.asarray(fit_predict(indices, draw))
                if scores.shape != (len(test_labels), num_classes):
                    raise ValueError(
                        f"Classifier {name!r} returned scores of shape "
                        f"{scores.shape}; expected (num_test, num_classes) = "
                        f"{(len(test_labels), num_classes)}."
                    )
                metrics = classification_metrics(
                    scores, test_labels, num_classes
                )
                top1.append(metrics["top1"])
                top5.append(metrics["top5"])
            result["methods"][name]["top1"].append(top1)
            result["methods"][name]["top5"].append(top5)
    for method in result["methods"].values():
        method["top1_mean"] = [float(np.mean(t)) for t in method["top1"]]
        method["top1_std"] = [float(np.std(t)) for t in method["top1"]]
        method["top5_mean"] = [float(np.mean(t)) for t in method["top5"]]
    return result
