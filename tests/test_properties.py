"""Property-based tests (hypothesis): round trips, mask properties, config
round trips of random valid configs, and readers fed malformed files."""

import json
import os
import struct

import keras
import numpy as np
import pytest
from conftest import to_numpy
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_aim
from keras_aim import convert as conversion
from keras_aim import layers
from keras_aim.layers.token_orders import TOKEN_ORDERS
from keras_aim.layers.token_orders import token_order

SOME = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@SOME
@given(
    patch=st.integers(1, 5),
    grid=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    channels=st.integers(1, 4),
    batch=st.integers(1, 3),
)
@pytest.mark.large(backend="torch")
def test_patchify_unpatchify_round_trip(patch, grid, channels, batch):
    shape = (batch, grid[0] * patch, grid[1] * patch, channels)
    images = np.random.default_rng(0).normal(size=shape).astype("float32")
    patches = to_numpy(layers.Patchify(patch)(images))
    assert patches.shape == (batch, grid[0] * grid[1], patch * patch * channels)
    # Patch k holds grid cell (k // W, k % W), (row, column, channel) order.
    k = grid[0] * grid[1] - 1
    r, c = divmod(k, grid[1])
    cell = images[0, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch]
    np.testing.assert_array_equal(patches[0, k], cell.reshape(-1))
    back = layers.Unpatchify(patch, channels)(
        patches.astype("float32"), grid_size=grid
    )
    np.testing.assert_array_equal(to_numpy(back), images)


@SOME
@given(
    grid=st.tuples(st.integers(1, 5), st.integers(2, 5)),
    order=st.sampled_from(TOKEN_ORDERS),
    data=st.data(),
)
def test_prefix_masks_and_orders(grid, order, data):
    n = grid[0] * grid[1]
    prefixes = data.draw(
        st.lists(st.integers(0, n), min_size=1, max_size=4), label="prefixes"
    )
    mask = to_numpy(layers.prefix_causal_mask(prefixes, n)).astype(bool)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    for b, k in enumerate(prefixes):
        np.testing.assert_array_equal(mask[b], (j <= i) | (j < k))
        # The next patch is never visible to an output outside the prefix.
        for row in range(max(k - 1, 0), n - 1):
            assert not mask[b, row, row + 1] or row + 1 < k
    permutation = token_order(order, *grid, seed=3)
    assert sorted(permutation.tolist()) == list(range(n))


def backbone_configs():
    return st.builds(
        dict,
        patch_size=st.integers(1, 4),
        grid=st.tuples(st.integers(1, 3), st.integers(1, 3)),
        heads=st.sampled_from([1, 2, 4]),
        head_width=st.sampled_from([4, 8]),
        num_layers=st.integers(1, 3),
        mlp_ratio=st.sampled_from([1.0, 2.0, 4.0]),
        channels=st.integers(1, 3),
        epsilon=st.sampled_from([1e-6, 1e-5]),
    )


@settings(max_examples=12, deadline=None)
@given(config=backbone_configs())
def test_config_round_trips_of_random_valid_configs(config):
    p = config["patch_size"]
    backbone = keras_aim.AIMBackbone(
        image_shape=(
            config["grid"][0] * p,
            config["grid"][1] * p,
            config["channels"],
        ),
        patch_size=p,
        hidden_dim=config["heads"] * config["head_width"],
        num_layers=config["num_layers"],
        num_heads=config["heads"],
        mlp_ratio=config["mlp_ratio"],
        layer_norm_epsilon=config["epsilon"],
    )
    saved = backbone.get_config()
    clone = keras_aim.AIMBackbone.from_config(json.loads(json.dumps(saved)))
    assert clone.get_config() == saved
    assert clone.count_params() == backbone.count_params()
    assert (
        backbone.count_params()
        == keras_aim.utils.validation.backbone_parameter_count(
            p,
            backbone.hidden_dim,
            config["num_layers"],
            config["mlp_ratio"],
            config["channels"],
        )
    )


# --- Readers fed malformed input ---


def safetensors_bytes(tensors):
    header, offset, payload = {}, 0, b""
    for name, array in tensors.items():
        raw = array.astype("<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
        payload += raw
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


GOOD = safetensors_bytes(
    {"a.weight": np.ones((4, 3)), "b.bias": np.arange(5.0)}
)


@SOME
@given(
    cut=st.integers(0, len(GOOD) - 1),
    flips=st.lists(
        st.tuples(st.integers(0, len(GOOD) - 1), st.integers(1, 255)),
        max_size=4,
    ),
    header_size=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
def test_safetensors_reader_refuses_malformed_files(
    tmp_path_factory, cut, flips, header_size
):
    data = bytearray(GOOD)
    for position, value in flips:
        data[position] ^= value
    if header_size is not None:
        data[:8] = struct.pack("<Q", header_size)
    path = str(tmp_path_factory.mktemp("st") / "model.safetensors")
    with open(path, "wb") as f:
        f.write(bytes(data[: cut or len(data)]))
    try:
        with conversion.open_state_dict(path) as reader:
            for name in reader.keys():
                array = reader.get(name, dtype="float32")
                assert array.shape == reader.shape(name)
    except ValueError as error:
        assert "model.safetensors" in str(error) or "Tensor" in str(error)


@SOME
@given(payload=st.binary(min_size=0, max_size=300))
def test_pth_reader_refuses_garbage(tmp_path_factory, payload):
    path = str(tmp_path_factory.mktemp("pth") / "backbone.pth")
    with open(path, "wb") as f:
        f.write(payload)
    with pytest.raises(ValueError, match="backbone.pth"):
        conversion.open_state_dict(path)


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**12), 10**12),
        st.floats(allow_nan=False),
        st.text(max_size=5),
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@SOME
@given(
    changes=st.dictionaries(
        st.sampled_from(
            [
                "img_size",
                "patch_size",
                "embed_dim",
                "num_blocks",
                "num_heads",
                "probe_layers",
                "num_classes",
            ]
        ),
        JSON_VALUES,
        min_size=1,
        max_size=3,
    )
)
@pytest.mark.large(backend="torch")
def test_hub_config_json_fuzz(tmp_path_factory, changes):
    from tests import reference as ref

    folder = str(tmp_path_factory.mktemp("hub") / "aim")
    sd = ref.random_state_dict(
        embed_dim=16, num_blocks=1, num_heads=2, patch_size=4, num_classes=3
    )
    config = ref.hub_config(sd, 2, img_size=16, probe_layers=[0])
    config.update(changes)
    ref.write_hub_folder(folder, sd, config)
    try:
        model = keras_aim.AIMImageClassifier.from_preset(folder)
    except (ValueError, FileNotFoundError) as error:
        assert str(error)
        return
    # Accepted only when the config agrees with the tensors.
    assert model.backbone.hidden_dim == 16 and model.num_classes == 3
    assert os.path.isdir(folder)
    keras.backend.clear_session()
