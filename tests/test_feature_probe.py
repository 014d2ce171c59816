"""`probing.FeatureProbe`: a head retrained on cached features, reset to
the same start before every call."""

import numpy as np
import pytest

from keras_aim import probing


def features(seed, num, tokens=4, width=8, classes=3):
    rng = np.random.RandomState(seed)
    labels = np.arange(num) % classes
    centres = np.random.RandomState(9).randn(classes, 1, width)
    x = centres[labels] + 0.3 * rng.randn(num, tokens, width)
    return x.astype("float32"), labels


@pytest.mark.parametrize(
    "probe",
    ["attentive", pytest.param("linear", marks=pytest.mark.large)],
)
def test_every_call_starts_from_the_same_head(probe):
    x, y = features(0, 24)
    test_x, test_y = features(1, 9)

    def build():
        return probing.FeatureProbe(
            x.shape[1:],
            3,
            num_heads=2,
            probe=probe,
            epochs=10,
            batch_size=8,
            learning_rate=3e-2,
        )

    head = build()
    first = head(x, y, test_x)
    assert first.shape == (9, 3) and first.dtype == np.float32
    # Training on other data in between changes nothing for the next call
    # of the same data: weights and optimizer state were reset.
    other = head(x[:12], (y[:12] + 1) % 3, test_x)
    assert not np.allclose(other, first)
    np.testing.assert_allclose(head(x, y, test_x), first, rtol=1e-5, atol=1e-6)
    fresh = build()
    np.testing.assert_allclose(fresh(x, y, test_x), first, rtol=1e-5, atol=1e-6)
    assert sorted(head._heads) == [12, 24]  # one compiled head per size
    accuracy = probing.classification_metrics(first, test_y)["top1"]
    assert accuracy > 0.5  # well-separated classes


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(feature_shape=(8,)), "feature_shape"),
        (dict(feature_shape=(4, 0)), "feature_shape"),
        (dict(probe="knn"), "probe"),
        (dict(num_classes=0), "num_classes"),
        (dict(epochs=0), "epochs"),
        (dict(batch_size=-1), "batch_size"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    settings = dict(feature_shape=(4, 8), num_classes=3, num_heads=2)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=match):
        probing.FeatureProbe(**settings)


def test_bad_features_and_labels_are_refused():
    x, y = features(0, 6)
    head = probing.FeatureProbe(x.shape[1:], 3, num_heads=2, epochs=1)
    with pytest.raises(ValueError, match=r"`x` must have features of shape"):
        head(x[:, :2], y, x)
    with pytest.raises(ValueError, match=r"`test_x` must have features"):
        head(x, y, x[:, :, :4])
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        head(x, y + 5, x)
