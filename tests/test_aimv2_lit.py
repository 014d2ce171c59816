"""AIMv2 LiT: both towers, zero-shot classification and the CLIP tokenizer,
against the independent float64 NumPy reference (`tests/reference_lit.py`)
on tiny checkpoints in both key layouts that the tests write; hostile
checkpoints refused; the released preset's exact parameter count.
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_aim
from keras_aim.convert import cli
from keras_aim.models.aimv2.aimv2_presets import PRESETS
from keras_aim.models.aimv2.aimv2_presets import lit_parameter_count
from tests import reference as ref
from tests import reference_lit as lit_ref
from tests.harness import run_layer_test

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

TOL = 2e-5
LENGTH = lit_ref.TEXT["length"]
PROMPTS = ["a photo of the cat", "a small dog", "a big car!"]


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.fixture(scope="module")
def vocabulary():
    return lit_ref.tiny_vocabulary()


@pytest.fixture(scope="module")
def lit_sd(vocabulary):
    return lit_ref.random_lit_state_dict(len(vocabulary[0]), seed=7)


def eos_id(vocabulary):
    return vocabulary[0][lit_ref.END]


def write_lit(folder, sd, vocabulary, layout="release", tokenizer=True):
    """A LiT hub folder: config, weights and (optionally) the BPE files."""
    folder = str(folder)
    tensors = sd if layout == "release" else lit_ref.to_transformers_lit(sd)
    config = lit_ref.lit_hub_config(sd, eos_id(vocabulary), layout)
    ref.write_hub_folder(folder, tensors, config)
    if tokenizer:
        lit_ref.write_tokenizer_files(folder)
    return folder


def reference_ids(vocabulary, texts):
    vocab, merges = vocabulary
    return np.asarray(
        [lit_ref.reference_tokenize(t, vocab, merges, LENGTH) for t in texts]
    )


# --- The tokenizer -----------------------------------------------------------


def test_tokenizer_matches_the_reference_bpe(vocabulary, tmp_path):
    lit_ref.write_tokenizer_files(str(tmp_path))
    tokenizer = keras_aim.AIMv2Tokenizer.from_folder(tmp_path, LENGTH)
    texts = [
        "a photo of the cat",
        "  A   PHOTO\tof a\nDOG.  ",  # case and whitespace runs
        "the cat's small car, 2 dogs!!",  # contraction, digit, punctuation
        "café naïve",  # bytes beyond ASCII
        "photos photo photography",  # merges that stop midway
        " ".join(["big"] * 30),  # cut to LENGTH, end token kept
    ]
    got = tokenizer(texts)
    assert got.dtype == np.int32 and got.shape == (len(texts), LENGTH)
    np.testing.assert_array_equal(got, reference_ids(vocabulary, texts))
    vocab = vocabulary[0]
    # "ot" outranks the merges that spell "photo", which stops at ph|ot|o.
    spelled = ["a</w>", "ph", "ot", "o</w>", "of</w>", "the</w>", "cat</w>"]
    assert got[0, :9].tolist() == [
        vocab[lit_ref.START],
        *[vocab[t] for t in spelled],
        vocab[lit_ref.END],
    ]
    assert got[-1, -1] == vocab[lit_ref.END]
    # The tokenizer.json it saves reads back to the same ids.
    tokenizer.save_to_preset(str(tmp_path / "saved_dir"))
    again = keras_aim.AIMv2Tokenizer.from_folder(tmp_path / "saved_dir", 16)
    np.testing.assert_array_equal(again(texts), got)


def test_tokenizer_refuses_bad_files_and_inputs(tmp_path):
    with pytest.raises(ValueError, match="holds no tokenizer"):
        keras_aim.AIMv2Tokenizer.from_folder(tmp_path)
    lit_ref.write_tokenizer_files(str(tmp_path))
    with open(tmp_path / "merges.txt", "a") as f:
        f.write("a b c\n")
    with pytest.raises(ValueError, match="merges.txt, line .*two tokens"):
        keras_aim.AIMv2Tokenizer.from_folder(tmp_path)
    with open(tmp_path / "tokenizer.json", "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="Could not read the tokenizer"):
        keras_aim.AIMv2Tokenizer.from_folder(tmp_path)
    os.remove(tmp_path / "tokenizer.json")
    lit_ref.write_tokenizer_files(str(tmp_path))
    tokenizer = keras_aim.AIMv2Tokenizer.from_folder(tmp_path)
    for bad in ([1, 2], [], None):
        with pytest.raises(ValueError, match="texts"):
            tokenizer(bad)
    with pytest.raises(ValueError, match="sequence_length"):
        keras_aim.AIMv2Tokenizer.from_folder(tmp_path, sequence_length=1)


# --- Layers ------------------------------------------------------------------


def test_lit_layers_harness(tmp_path):
    run_layer_test(
        keras_aim.layers.AttentionPooling,
        {"hidden_dim": 16, "num_heads": 2, "output_dim": 8},
        images((2, 5, 16)),
        (2, 8),
        tmp_path=tmp_path,
    )


@pytest.mark.large(backend="torch")
def test_causal_text_tower_pools_at_the_first_end_token(vocabulary):
    text = lit_ref.TEXT
    eos = eos_id(vocabulary)
    encoder = keras_aim.AIMv2TextEncoder(
        vocabulary_size=len(vocabulary[0]),
        hidden_dim=text["hidden_dim"],
        num_layers=text["num_layers"],
        num_heads=lit_ref.HEADS,
        intermediate_dim=text["intermediate_dim"],
        max_sequence_length=text["length"],
        eos_token_id=eos,
    )
    ids = np.zeros((3, text["length"]), "int32")
    ids[:, :4] = [eos - 1, 3, 4, eos]
    base = numpy(encoder(ids))
    after = ids.copy()
    after[:, 4:8] = [5, 6, eos, 7]  # tokens after the first end token
    np.testing.assert_allclose(numpy(encoder(after)), base, atol=1e-6)
    before = ids.copy()
    before[:, 1] = 7
    assert np.abs(numpy(encoder(before)) - base).max() > 1e-3
    assert np.abs(numpy(encoder(ids[:, :4])) - base).max() < 1e-5
    with pytest.raises(ValueError, match="max_sequence_length=16"):
        encoder.check_token_ids(np.zeros((1, 17), "int32"))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        encoder.check_token_ids(np.full((1, 3), len(vocabulary[0])))
    with pytest.raises(ValueError, match="eos_token_id"):
        keras_aim.AIMv2TextEncoder(vocabulary_size=20, eos_token_id=20)


# --- Converted checkpoints against the reference -----------------------------


def prompt_ids(vocabulary):
    """Two prompts and a row without an end token (pooled at its first)."""
    ids = reference_ids(vocabulary, PROMPTS)
    ids[2] = ids[2, 1]
    return ids


@pytest.mark.parametrize("layout", ["release", "transformers"])
def test_converted_lit_matches_the_reference(
    layout, lit_sd, vocabulary, tmp_path
):
    folder = write_lit(tmp_path / "hub", lit_sd, vocabulary, layout)
    lit = keras_aim.AIMv2LiT.from_preset(folder)
    assert lit.tokenizer is not None and lit.projection_dim == 24
    x = images((2, 28, 28, 3))
    ids = prompt_ids(vocabulary)
    want, image, text = lit_ref.numpy_logits(lit_sd, x, ids, eos_id(vocabulary))
    got = lit({"images": x, "token_ids": ids})
    assert np.abs(numpy(got["logits_per_image"]) - want).max() <= TOL
    assert np.abs(numpy(got["logits_per_text"]) - want.T).max() <= TOL
    assert np.abs(numpy(lit.encode_images(x)) - image).max() <= TOL
    assert np.abs(numpy(lit.encode_text(ids)) - text).max() <= TOL
    unit = numpy(lit.encode_text(ids, normalize=True))
    assert np.abs(unit - lit_ref.normalize(text)).max() <= TOL
    # Strings go through the tokenizer.
    text = lit_ref.numpy_text_embeddings(
        lit_sd, reference_ids(vocabulary, PROMPTS), eos_id(vocabulary)
    )
    assert np.abs(numpy(lit.encode_text(PROMPTS)) - text).max() <= TOL
    assert lit.logit_scale == pytest.approx(np.exp(np.log(1 / 0.07) - 0.3))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lit({"images": x, "token_ids": ids + len(vocabulary[0])})
    with pytest.raises(ValueError, match="normalised float images"):
        lit({"images": x.astype("uint8"), "token_ids": ids})


def test_the_tolerance_sees_a_missing_causal_mask(lit_sd, vocabulary):
    """The parity tolerance can see the mistake a port would make."""
    ids = prompt_ids(vocabulary)
    want = lit_ref.numpy_text_embeddings(lit_sd, ids, eos_id(vocabulary))
    both_ways = lit_ref.numpy_text_embeddings(
        lit_sd, ids, eos_id(vocabulary), causal=False
    )
    assert np.abs(both_ways - want).max() > 1e-3


def test_zero_shot_classifier_matches_the_reference(
    lit_sd, vocabulary, tmp_path
):
    lit = keras_aim.AIMv2LiT.from_preset(
        write_lit(tmp_path / "hub", lit_sd, vocabulary)
    )
    names = ["cat", "dog", "car"]
    templates = ["a photo of the {}", "a small {}!"]
    classifier = lit.zero_shot_classifier(names, templates, batch_size=3)
    assert classifier.class_names == names
    x = images((2, 28, 28, 3), seed=2)
    prompts = [t.format(n) for n in names for t in templates]
    text = lit_ref.normalize(
        lit_ref.numpy_text_embeddings(
            lit_sd, reference_ids(vocabulary, prompts), eos_id(vocabulary)
        )
    )
    classes = lit_ref.normalize(text.reshape(3, 2, -1).mean(axis=1))
    image = lit_ref.normalize(lit_ref.numpy_image_embeddings(lit_sd, x))
    want = lit.logit_scale * image @ classes.T
    assert np.abs(numpy(classifier(x)) - want).max() <= TOL
    assert np.abs(classifier.predict(x, verbose=0) - want).max() <= TOL
    for bad, needle in (
        ({"templates": ["no slot"]}, "exactly one"),
        ({"templates": "a {}"}, "list of strings"),
        ({"class_names": ["cat", "cat"]}, "more than once"),
        ({"class_names": []}, "empty"),
    ):
        arguments = {"class_names": names, **bad}
        with pytest.raises(ValueError, match=needle):
            lit.zero_shot_classifier(**arguments)


def test_convert_cli_and_preset_round_trip(lit_sd, vocabulary, tmp_path):
    folder = write_lit(tmp_path / "hub", lit_sd, vocabulary, "transformers")
    output = str(tmp_path / "keras")
    model = cli.convert(cli._parser().parse_args([folder, "--output", output]))
    assert type(model) is keras_aim.AIMv2LiT
    assert os.path.isfile(os.path.join(output, "tokenizer.json"))
    loaded = keras_aim.AIMv2LiT.from_preset(output)
    x = images((2, 28, 28, 3))
    ids = reference_ids(vocabulary, PROMPTS)
    want, _, _ = lit_ref.numpy_logits(lit_sd, x, ids, eos_id(vocabulary))
    got = loaded({"images": x, "token_ids": loaded.tokenize(PROMPTS)})
    assert np.abs(numpy(got["logits_per_image"]) - want).max() <= TOL
    assert loaded.image_converter is not None
    # The image trunk alone, from the LiT hub folder and from the preset.
    trunk = keras_aim.AIMv2Backbone.from_preset(folder)
    assert trunk.count_params() == loaded.image_encoder.count_params()
    with pytest.raises(ValueError, match="load it with keras_aim.AIMv2LiT"):
        keras_aim.AIMv2Backbone.from_preset(output)


def test_lit_without_tokenizer_files_takes_ids(lit_sd, vocabulary, tmp_path):
    folder = write_lit(tmp_path / "hub", lit_sd, vocabulary, tokenizer=False)
    lit = keras_aim.AIMv2LiT.from_preset(folder)
    assert lit.tokenizer is None
    ids = reference_ids(vocabulary, PROMPTS)
    want = lit_ref.numpy_text_embeddings(lit_sd, ids, eos_id(vocabulary))
    assert np.abs(numpy(lit.encode_text(ids)) - want).max() <= TOL
    with pytest.raises(ValueError, match="no tokenizer.*vocab.json"):
        lit.encode_text("a cat")
    lit_ref.write_tokenizer_files(str(tmp_path / "tok"))
    lit.tokenizer = keras_aim.AIMv2Tokenizer.from_folder(tmp_path / "tok")
    assert lit.tokenizer.sequence_length == LENGTH
    np.testing.assert_array_equal(lit.tokenize(PROMPTS), ids)


# --- Hostile checkpoints -----------------------------------------------------


@pytest.mark.parametrize("layout", ["release", "transformers"])
def test_bad_lit_checkpoints_name_the_key(layout, lit_sd, vocabulary, tmp_path):
    base = (
        lit_sd if layout == "release" else lit_ref.to_transformers_lit(lit_sd)
    )
    text_key = sorted(k for k in base if "projection" in k or "projector" in k)
    text_key = [k for k in text_key if k.startswith("text")][0]
    head_key = sorted(k for k in base if ".head." in k and "weight" in k)[0]
    nan = dict(base)
    nan[text_key] = base[text_key].copy()
    nan[text_key][0, 0] = np.nan
    cases = {
        "missing": ({k: v for k, v in base.items() if k != head_key}, head_key),
        "extra": (
            {**base, "text_extra.weight": np.ones(2, "float32")},
            "text_extra",
        ),
        "shape": (
            {**base, head_key: base[head_key][:, :-1]},
            f"{head_key}: expected",
        ),
        "nan": (nan, f"'{text_key}'.*NaN"),
    }
    for name, (tensors, needle) in cases.items():
        folder = str(tmp_path / name)
        config = lit_ref.lit_hub_config(lit_sd, eos_id(vocabulary), layout)
        ref.write_hub_folder(folder, tensors, config)
        with pytest.raises(ValueError, match=needle):
            keras_aim.AIMv2LiT.from_preset(folder)


def test_wrong_sources_are_refused(lit_sd, vocabulary, tmp_path):
    trunk = {
        k[len("image_encoder.") :]: v
        for k, v in lit_sd.items()
        if k.startswith("image_encoder.") and ".head." not in k
    }
    config = lit_ref.lit_hub_config(lit_sd, eos_id(vocabulary))["vision_config"]
    config["model_type"] = "aimv2"
    folder = ref.write_hub_folder(str(tmp_path / "trunk"), trunk, config)
    with pytest.raises(ValueError, match="without a text tower"):
        keras_aim.AIMv2LiT.from_preset(folder)
    with pytest.raises(ValueError, match="aimv2_large_patch14_224_lit"):
        keras_aim.AIMv2LiT.from_preset("aimv2_large_patch14_224")
    with pytest.raises(ValueError, match="takes the overrides"):
        keras_aim.AIMv2LiT.from_preset(folder, probe_layers="last")
    bad = write_lit(tmp_path / "bad", lit_sd, vocabulary)
    config = json.load(open(os.path.join(bad, "config.json")))
    config["text_config"]["num_hidden_layers"] = 5
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="num_hidden_layers=5"):
        keras_aim.AIMv2LiT.from_preset(bad)


# --- Parameter counts --------------------------------------------------------


def test_the_lit_preset_has_its_exact_parameter_count():
    spec = PRESETS["aimv2_large_patch14_224_lit"]
    lit = spec["lit"]
    count = lit_parameter_count(
        spec["backbone"], lit["text"], lit["projection_dim"]
    )
    # trunk 309,197,824 + head 3,147,776 + text tower 122,958,336
    # + projections 786,432 + 589,824 + the temperature.
    assert count == lit["parameter_count"] == 436_680_193


def test_the_count_formula_matches_a_tiny_build(lit_sd, vocabulary, tmp_path):
    lit = keras_aim.AIMv2LiT.from_preset(
        write_lit(tmp_path / "hub", lit_sd, vocabulary), load_weights=False
    )
    text = lit.text_encoder
    count = lit_parameter_count(
        lit.image_encoder.get_config(),
        dict(text.get_config()),
        lit.projection_dim,
    )
    assert count == lit.count_params() == sum(v.size for v in lit_sd.values())


@pytest.mark.large(backend="torch")
def test_the_lit_preset_builds_with_its_exact_count():
    lit = keras_aim.AIMv2LiT.from_preset(
        "aimv2_large_patch14_224_lit", load_weights=False
    )
    assert lit.count_params() == 436_680_193
    assert lit.text_encoder.num_heads == 6 and lit.image_head.num_heads == 8


@pytest.mark.large(backend="torch")
def test_bfloat16_lit_loads_without_a_float32_copy(
    lit_sd, vocabulary, tmp_path
):
    folder = write_lit(tmp_path / "hub", lit_sd, vocabulary)
    lit = keras_aim.AIMv2LiT.from_preset(folder, dtype="bfloat16")
    assert {v.dtype for v in lit.weights} == {"bfloat16"}
    x = images((2, 28, 28, 3))
    ids = prompt_ids(vocabulary)
    want, _, _ = lit_ref.numpy_logits(lit_sd, x, ids, eos_id(vocabulary))
    got = lit({"images": x, "token_ids": ids})["logits_per_image"]
    assert np.abs(numpy(got) - want).max() < 0.5
    lit.save_to_preset(str(tmp_path / "bf16"))
    again = keras_aim.AIMv2LiT.from_preset(str(tmp_path / "bf16"))
    assert {v.dtype for v in again.weights} == {"bfloat16"}


@pytest.mark.parametrize(
    "module_name",
    [
        "layers.text_embedding",
        "layers.attention_pooling",
        "layers.contrastive_logits",
        "models.aimv2.aimv2_presets",
        "models.aimv2.aimv2_text_encoder",
    ],
)
def test_docstring_examples_run(module_name):
    import doctest
    import importlib

    module = importlib.import_module(f"keras_aim.{module_name}")
    globs = dict(keras=keras, np=np, keras_aim=keras_aim)
    result = doctest.testmod(module, extraglobs=globs)
    assert result.attempted > 0 and result.failed == 0


def test_every_lit_variable_has_one_layout_rule(lit_sd, vocabulary, tmp_path):
    import types

    from keras_aim.distribution import layout

    lit = keras_aim.AIMv2LiT.from_preset(
        write_lit(tmp_path / "hub", lit_sd, vocabulary), load_weights=False
    )
    mesh = types.SimpleNamespace(shape=(2, 2), axis_names=("batch", "model"))
    found = layout.check_layout(lit, mesh)
    for path in (
        "image_head/key/kernel",
        "image_projection/kernel",
        "text_embedding/token_embedding/embeddings",
    ):
        assert path in found["sharded"]
    assert "logit_scale/log_logit_scale" in found["replicated"]
    assert "text_embedding/position_embedding" in found["replicated"]
