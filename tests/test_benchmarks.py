"""Smoke tests of the benchmark scripts at tiny sizes (no timing asserts)."""

import json
import os
import subprocess
import sys

import keras
import pytest
from conftest import stderr_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, stderr_report(result.stderr)
    return result.stdout


@pytest.mark.extra_large
def test_training_overhead_smoke(tmp_path):
    output = str(tmp_path / "overhead.json")
    backend = keras.backend.backend()
    stdout = run_script(
        "training_overhead.py",
        f"--backends={backend}",
        "--steps=4",
        "--repeats=1",
        "--batch_size=8",
        "--width=32",
        "--depth=1",
        "--log_every=2",
        f"--output={output}",
    )
    assert f"| {backend} |" in stdout
    with open(output) as f:
        result = json.load(f)["results"][backend]
    assert result["bare_seconds"] > 0 and result["loop_seconds"] > 0
    assert result["ratio"] == result["loop_seconds"] / result["bare_seconds"]
    runs = result["runs"]
    assert len(runs["bare"]) == len(runs["loop"]) == 1
    assert set(result["conversions_per_step"]) == {"bare", "loop"}
    kernel = result["attention_kernel"]
    assert kernel["ran"] and kernel["backend"] == backend and kernel["masked"]


@pytest.mark.large(backend="torch")  # torch's make test session is shortest
def test_plan_table_and_its_parameter_formula(tmp_path):
    """plan.py's table, and its parameter formula against built models."""
    output = str(tmp_path / "plan.json")
    stdout = run_script(
        "plan.py", "--presets=aim_600m", "--devices=8", f"--output={output}"
    )
    assert "| aim_600m | 8 | 2x4 |" in stdout  # 4 divides 12 heads
    with open(output) as f:
        result = json.load(f)
    plain, remat = result["rows"]
    assert (plain["remat"], remat["remat"]) == (False, True)
    # The paper's figure: about 1.7 TFLOP per image for an AIM-600M step.
    assert abs(plain["train_tflop_per_image"] - 1.70) < 0.02
    assert remat["activation_gb_per_device"] < plain["activation_gb_per_device"]
    # 16 bytes per parameter (weights, gradients, two AdamW moments), /8.
    assert plain["state_gb_per_device"] == 16 * plain["parameters"] / 8 / 1e9
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from plan import model_counts

    import keras_aim

    for width, depth, heads, head, layers in (
        (32, 2, 4, 48, 1),
        (64, 1, 8, 32, 3),
    ):
        backbone = keras_aim.AIMBackbone(
            image_shape=(16, 16, 3),
            patch_size=4,
            hidden_dim=width,
            num_layers=depth,
            num_heads=heads,
        )
        pretrainer = keras_aim.AIMPretrainer(
            backbone, head_hidden_dim=head, head_num_layers=layers
        )
        counts = model_counts(width, depth, heads, 4, 16, head, layers)
        assert counts["trunk_parameters"] == backbone.count_params()
        assert counts["head_parameters"] == (
            pretrainer.count_params() - backbone.count_params()
        )


@pytest.mark.extra_large
@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="loads run on the backend given by --backend; checked once",
)
def test_conversion_memory_smoke(tmp_path):
    """The loading-memory benchmark on a tiny checkpoint, Keras preset too."""
    backend = keras.backend.backend()
    results = tmp_path / "results"
    stdout = run_script(
        "conversion_memory.py",
        f"--backend={backend}",
        "--width=64",
        "--blocks=1",
        "--num-heads=4",
        "--cases=import,keras_f32",
        f"--workdir={tmp_path / 'work'}",
        f"--results-dir={results}",
    )
    for case in ("import", "keras_f32"):
        assert f"| {case} |" in stdout
    report = (results / f"conversion_memory_{backend}.md").read_text()
    assert "width 64, 1 blocks" in report and "| keras_f32 |" in report
    assert not (tmp_path / "work").exists()  # scratch removed without --keep


@pytest.mark.extra_large
def test_inference_benchmark_smoke(tmp_path):
    """The speed benchmark at a tiny size: every column, both dtypes."""
    backend = keras.backend.backend()
    output = str(tmp_path / "inference.json")
    stdout = run_script(
        "inference.py",
        f"--backends={backend}",
        "--preset=",
        "--width=32",
        "--depth=1",
        "--heads=4",
        "--image_size=16",
        "--patch=4",
        "--batch_sizes=2",
        "--dtypes=float32,bfloat16",
        "--repeats=1",
        "--rounds=1",
        "--attention_tokens=16",
        "--peak_size=256",
        f"--output={output}",
    )
    assert f"| keras_aim | {backend} | float32 | 2 |" in stdout
    assert "| torch_plain | torch | bfloat16 | 2 |" in stdout
    with open(output) as f:
        result = json.load(f)
    rows = {(r["contender"], r["dtype"]): r for r in result["results"]}
    assert len(rows) == 4
    plain = rows[("torch_plain", "float32")]
    assert plain["ratio_to_torch_plain"] == 1.0
    ours = rows[("keras_aim", "float32")]
    assert ours["ratio_to_torch_plain"] == ours["seconds"] / plain["seconds"]
    # bfloat16 differs from float32 by bfloat16's rounding, not more.
    for contender in ("keras_aim", "torch_plain"):
        difference = rows[(contender, "bfloat16")]["difference_to_float32"]
        assert 0 < difference < 0.05
    # The fused attention agrees with the plain softmax path.
    assert result["attention"][backend]["max_difference"] < 1e-4
    # Every row says which attention kernel ran, for its dtype, unmasked.
    for (contender, dtype), row in rows.items():
        kernel = row["attention_kernel"]
        assert kernel["ran"], (contender, dtype)
        assert (kernel["dtype"], kernel["masked"]) == (dtype, False)
    assert rows[("keras_aim", "float32")]["attention_kernel"]["backend"] == (
        backend
    )
    fused = result["attention"][backend]["attention_kernel"]
    assert fused["ran"] and fused["masked"] is True
    assert_cpu_recorded(result["environment"])


@pytest.mark.extra_large
def test_train_step_benchmark_smoke(tmp_path):
    """The pre-training step benchmark at a tiny size, against plain torch."""
    backend = keras.backend.backend()
    output = str(tmp_path / "train_step.json")
    stdout = run_script(
        "train_step.py",
        f"--backends={backend}",
        "--configs=tiny",
        "--warmup=1",
        "--steps=2",
        "--rounds=1",
        "--nocompile",
        f"--output={output}",
    )
    assert f"| tiny | keras_aim | {backend} | float32 |" in stdout
    assert f"| tiny | keras_aim | {backend} | mixed_bfloat16 |" in stdout
    with open(output) as f:
        result = json.load(f)
    rows = {(r["contender"], r["policy"]): r for r in result["results"]}
    ablations = {"jax": {"keras_dense"}, "torch": {"keras_adamw"}}
    expected = {
        (name, policy)
        for name in ("torch_eager", "keras_aim")
        for policy in ("float32", "mixed_bfloat16")
    } | {(name, "float32") for name in ablations.get(backend, ())}
    assert set(rows) == expected
    for policy in ("float32", "mixed_bfloat16"):
        peer = rows[("torch_eager", policy)]
        assert peer["ratio_to_torch_eager"] == 1.0
        ours = rows[("keras_aim", policy)]
        assert ours["ratio_to_torch_eager"] == pytest.approx(
            ours["seconds"] / peer["seconds"]
        )
        assert ours["steps_per_second"] == pytest.approx(1 / ours["seconds"])
        full = rows[("keras_aim", "float32")]["seconds"]
        assert ours["speedup_over_float32"] == pytest.approx(
            full / ours["seconds"]
        )
    # Every row says which attention kernel ran: masked, in the compute
    # dtype of its policy.
    for (name, policy), row in rows.items():
        kernel = row["attention_kernel"]
        assert kernel["ran"], (name, policy)
        want = "float32" if policy == "float32" else "bfloat16"
        assert (kernel["dtype"], kernel["masked"]) == (want, True)
        assert kernel["backend"] == ("torch" if "torch" in name else backend)
    assert_cpu_recorded(result["environment"])


def assert_cpu_recorded(environment):
    cpu = environment["cpu"]
    assert cpu["model"]
    assert set(cpu["flags"]) >= {"avx512_bf16", "amx_bf16"}
    assert cpu["native_bfloat16"] == (
        cpu["flags"]["avx512_bf16"] or cpu["flags"]["amx_bf16"]
    )


def test_torch_reference_loss_matches_keras_aim():
    """The plain PyTorch peer computes AIM's objective: same weights, same
    prefix lengths, same loss as keras_aim's (so the race is fair)."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import numpy as np
    import torch_reference

    from keras_aim import losses

    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 8, 8, 3)).astype("float32")
    predictions = rng.normal(size=(3, 4, 48)).astype("float32")
    prefix = np.array([1, 2, 3])
    expected = float(
        losses.next_patch_pixel_loss(images, predictions, prefix, patch_size=4)
    )
    model = torch_reference.Pretrainer(8, 4, 16, 1, 2, 16, 1)

    class Fixed(torch.nn.Module):  # the head's output, fixed
        def forward(self, tokens):
            return torch.from_numpy(predictions)

    model.head = Fixed()
    got = float(
        model.loss(
            torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
            torch.from_numpy(prefix),
        )
    )
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.extra_large
def test_eval_pixels_benchmark_smoke(tmp_path):
    """The evaluation-input benchmark at a tiny size: every arm and part."""
    output = str(tmp_path / "eval_pixels.json")
    stdout = run_script(
        "eval_pixels.py",
        "--images=4",
        "--rounds=1",
        "--passes=1",
        "--batch_size=2",
        "--model_width=64",
        f"--output={output}",
    )
    assert "| library |" in stdout and "| JPG (cmyk_adobe) |" in stdout
    with open(output) as f:
        result = json.load(f)
    summary = result["summary"]
    assert set(summary) == {"old", "library", "tf_taps", "tf_accurate"}
    for arm in ("library", "tf_taps"):  # Pillow decodes: exact.
        assert summary[arm]["identical_images"] == 1.0
    for arm in summary:
        assert summary[arm]["images_per_second"] > 0
    assert summary["tf_accurate"]["mean_abs_levels"] < 0.05
    assert summary["old"]["mean_abs_levels"] > 0.1
    assert all(row["new"]["identical"] for row in result["formats"].values())
    agreement = result["model_agreement"]["skimage"]
    assert 0 <= agreement["top1_agreement"] <= 1
    with open(str(tmp_path / "eval_pixels.md")) as f:
        assert "| library |" in f.read()


@pytest.mark.extra_large
def test_deployment_smoke(tmp_path):
    """benchmarks/deployment.py end to end on a random tiny trunk."""
    output = str(tmp_path / "deployment.json")
    stdout = run_script(
        "deployment.py",
        "--tiny",
        "--probe_epochs=1",
        "--runtimes=keras_jax,onnx_torch",
        "--batch_sizes=1,4",
        "--rounds=1",
        "--repeats=2",
        "--warmup=1",
        f"--work_dir={tmp_path / 'work'}",
        f"--output={output}",
    )
    assert "| ONNX Runtime (ONNX from torch) | int8 |" in stdout
    with open(output) as f:
        result = json.load(f)
    modes = result["accuracy"]["modes"]
    assert set(modes) == {"float32", "int8", "int4"}
    assert modes["float32"]["same_top1_as_float32"] == 1.0
    weights = {mode: modes[mode]["weights_file_bytes"] for mode in modes}
    assert weights["int4"] < weights["int8"] < weights["float32"]
    assert result["export"]["onnx_torch/int4"]["error"]  # refused, named
    rows = {
        (row["runtime"], row["precision"], row["batch"]): row
        for row in result["latency"]
    }
    assert len(rows) == 2 * 2 * 2
    for row in rows.values():
        assert row["ms_per_image"] > 0
        is_float = row["precision"] == "float32"
        assert (row["int8_over_float32"] is None) == is_float
        # The same artifact answers as the Keras model it came from.
        if is_float:
            assert row["top1"] == modes["float32"]["top1"]
    with open(output[: -len(".json")] + ".md") as f:
        assert "| int8 |" in f.read()


def _benchmark_module(name):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import importlib

    return importlib.import_module(name)


def test_cpu_info_reads_the_model_and_bfloat16_flags(tmp_path):
    bench_utils = _benchmark_module("bench_utils")
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\n"
        "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    cpu = bench_utils.cpu_info(str(path))
    assert cpu["model"] == "Test CPU 9000"
    assert cpu["flags"]["avx512_bf16"] and cpu["flags"]["amx_tile"]
    assert not cpu["flags"]["amx_bf16"] and not cpu["flags"]["avx512_fp16"]
    assert cpu["native_bfloat16"] is True
    path.write_text("model name\t: Old CPU\nflags\t\t: fpu avx2\n")
    cpu = bench_utils.cpu_info(str(path))
    assert (cpu["model"], cpu["native_bfloat16"]) == ("Old CPU", False)


def test_kernel_names_from_profiler_ops_hlo_and_graph_ops():
    ak = _benchmark_module("attention_kernel")
    ops = [
        "aten::_scaled_dot_product_efficient_attention_backward",
        "aten::_scaled_dot_product_efficient_attention",
        "aten::scaled_dot_product_attention",
    ]
    assert ak.torch_kernel_name(sorted(ops)) == ops[1]
    assert ak.torch_kernel_name([], {"aten::_softmax", "aten::bmm"}) == (
        "no fused kernel (matmul + softmax)"
    )
    cudnn = (
        '%c = custom-call(%q, %k, %v), custom_call_target="__cudnn$fmhaSoftmax"'
        '\n%d = custom-call(%c), custom_call_target="foo"'
    )
    assert ak.jax_hlo_kernel(cudnn) == (
        "cudnn fused attention",
        ["__cudnn$fmhaSoftmax", "foo"],
    )
    assert ak.jax_hlo_kernel("%e = exponential(%s)") == (
        "xla (plain softmax attention)",
        [],
    )
    types = {"Einsum", "Softmax", "SelectV2"}
    assert ak.tensorflow_kernel_name(types, False) == (
        "tf graph: einsum + softmax"
    )
    assert ak.tensorflow_kernel_name(types, True) == "xla: einsum + softmax"


def test_detect_model_reads_the_kernel_that_ran():
    """On this CPU: torch's SDPA kernel, XLA's or TensorFlow's softmax."""
    import numpy as np

    import keras_aim

    ak = _benchmark_module("attention_kernel")
    backbone = keras_aim.AIMBackbone(
        image_shape=(8, 8, 3),
        patch_size=4,
        hidden_dim=8,
        num_layers=1,
        num_heads=2,
    )
    images = np.zeros((2, 8, 8, 3), "float32")
    plain = ak.detect_model(backbone, images, masked=False)
    pretrainer = keras_aim.AIMPretrainer(
        backbone, head_hidden_dim=8, head_num_layers=1
    )
    masked = ak.detect_model(pretrainer, images, masked=True, training=True)
    backend = keras.backend.backend()
    for report, was_masked in ((plain, False), (masked, True)):
        assert report["backend"] == backend
        assert (report["dtype"], report["masked"]) == ("float32", was_masked)
        if backend == "torch":
            assert report["ran"].startswith("aten::_scaled_dot_product_")
            assert "aten::scaled_dot_product_attention" in report["ops"]
        elif backend == "jax":
            assert report["ran"] == "xla (plain softmax attention)"
        else:
            assert report["ran"] == "tf graph: einsum + softmax"
