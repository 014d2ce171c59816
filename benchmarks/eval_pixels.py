"""Evaluation input speed and exactness: the old tf path against the new.

Each arm turns a folder of ImageNet-like JPEGs (real photos from
scikit-image, re-encoded at ImageNet's typical sizes and quality) into
normalised 224 x 224 batches with `tf.data` (parallel map, batch 32,
prefetch), in a fresh process, on the CPUs this machine has:

    old          tf.io.decode_image + tf.image.resize (bicubic, antialias):
                 keras_aim before issue 20 (`resampling="tf_image"`)
    library      keras_aim.data.evaluation_dataset today: Pillow decodes
                 and resizes inside tf.numpy_function (one axis at a time,
                 only the crop's columns or rows in the second pass), tf
                 normalises: timm's way
    tf_taps      Pillow decodes, Pillow's taps resize in tf ops (integer
                 gather-multiply-sum): the re-implementation candidate
    tf_accurate  tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE") + the
                 same tf-op taps: TensorFlow only (exact for RGB and grey
                 JPEGs, not for CMYK ones or other formats)

Each round is a fresh process that builds every arm, runs one warm-up
pass of each, then alternates timed passes arm by arm (the order reversed
every pass and every round). Reported per arm: images per second (median
wall time of all its passes) and its ratio to the old arm, also as the
median of pass-by-pass ratios (each pass against the old arm's pass next
to it), CPU milliseconds per image (process time: steadier than wall time
when other jobs share the cores; `thread_scaling` records how many cores
a GIL-free job got before and after each round), and its pixels'
difference to the release's transform (PIL decode, `convert("RGB")`,
torchvision's `Resize(256)` and `CenterCrop(224)` rules on Pillow's
bicubic resize), in uint8 levels. Two untimed parts follow: the
difference to the release per file format (scikit-image's photos and the
generated images of tests/pixel_reference.py), old and new; and what it
does to a model: the top-1 agreement and largest logit change of a small
randomly initialised AIM classifier (224 px, 1000 classes) fed the old and
the new input, for the scikit-image photos and for the generated files.

    python benchmarks/eval_pixels.py --images=160 --rounds=3
"""

import json
import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import bench_utils  # noqa: E402
from pixel_reference import compare  # noqa: E402
from pixel_reference import release_pixels  # noqa: E402
from pixel_reference import to_levels  # noqa: E402

ARMS = ("old", "library", "tf_taps", "tf_accurate")
# Typical ImageNet validation sizes (width, height); most are 500 wide.
SIZES = (
    (500, 375),
    (375, 500),
    (500, 333),
    (500, 500),
    (333, 500),
    (640, 480),
    (500, 400),
    (800, 600),
    (400, 300),
    (1024, 768),
)


def define_flags():
    """Defines the flags (not at import: tests import this file)."""
    flags.DEFINE_list("arms", list(ARMS), f"Arms, from {ARMS}.")
    flags.DEFINE_integer("images", 160, "JPEGs in the folder.")
    flags.DEFINE_integer("rounds", 3, "Rounds, each a fresh process.")
    flags.DEFINE_integer("passes", 4, "Timed passes per arm and round.")
    flags.DEFINE_integer("batch_size", 32, "Batch size.")
    flags.DEFINE_string(
        "output", "benchmarks/results/eval_pixels.json", "JSON results."
    )
    flags.DEFINE_bool("formats", True, "Measure exactness per format.")
    flags.DEFINE_integer("model_width", 192, "Width of the agreement model.")
    flags.DEFINE_string("folder", None, "Internal: the image folder.")
    flags.DEFINE_string("worker", None, "Internal: run the arms.")


FLAGS = flags.FLAGS


def pillow_version():
    import PIL
    from PIL import features

    turbo = features.version("libjpeg_turbo")
    return f"{PIL.__version__} (libjpeg-turbo {turbo})"


def write_photos(folder, count):
    """ImageNet-like JPEGs made from scikit-image's photos."""
    import numpy as np
    from PIL import Image

    from keras_aim.data import load_sample_photos

    photos = [image for _, image in load_sample_photos()]
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = Image.fromarray(photos[i % len(photos)])
        width, height = SIZES[i % len(SIZES)]
        image = photo.resize((width, height), Image.LANCZOS)
        quality = int(rng.integers(75, 96))
        image.save(os.path.join(folder, f"{i:05d}.jpg"), quality=quality)


def old_transform(path):
    """keras_aim's evaluation input before issue 20, for one file."""
    import tensorflow as tf

    from keras_aim import AIMImageConverter

    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False
    )
    image = tf.ensure_shape(image, (None, None, 3))
    return AIMImageConverter(resampling="tf_image").tf_transform(image)


def arm_dataset(arm, files, batch_size):
    import tensorflow as tf

    from keras_aim import AIMImageConverter
    from keras_aim.data import evaluation_dataset
    from keras_aim.data.decoding import read_rgb
    from keras_aim.models.aim.aim_image_ops import TFOps
    from keras_aim.models.aim.aim_image_ops import taps_resize

    if arm == "library":
        return evaluation_dataset(FLAGS.folder, batch_size=batch_size)
    converter = AIMImageConverter()

    class TapsOps(TFOps):
        def pil_resize(self, images, *args):
            return taps_resize(images, *args, self)

    def taps(image):
        image = tf.cast(image, tf.float32)
        return converter.transform(image, TapsOps(), True)

    if arm == "old":
        transform = old_transform
    elif arm == "tf_taps":
        transform = lambda path: taps(read_rgb(path))  # noqa: E731
    elif arm == "tf_accurate":

        def transform(path):
            image = tf.io.decode_jpeg(
                tf.io.read_file(path),
                channels=3,
                dct_method="INTEGER_ACCURATE",
            )
            return taps(image)

    else:
        raise ValueError(f"Unknown arm {arm!r}; expected one of {ARMS}.")
    dataset = tf.data.Dataset.from_tensor_slices(files)
    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def worker():
    """All arms in one process, pass by pass, alternating their order."""
    import numpy as np

    from keras_aim.data import list_image_files

    files = list_image_files(FLAGS.folder)
    reference = np.stack([release_pixels(f) for f in files])
    datasets, results = {}, {}
    for arm in FLAGS.arms:
        datasets[arm] = arm_dataset(arm, files, FLAGS.batch_size)
        batches = [np.asarray(x) for x in datasets[arm]]  # Warm-up.
        difference = np.abs(to_levels(np.concatenate(batches)) - reference)
        worst = difference.reshape(len(files), -1).max(axis=1)
        results[arm] = {
            "wall_seconds": [],
            "cpu_seconds": [],
            "mean_abs_levels": float(difference.mean()),
            "max_abs_levels": float(difference.max()),
            "identical_images": float(np.mean(worst < 0.01)),
        }
    for index in range(FLAGS.passes):
        order = FLAGS.arms if index % 2 == 0 else FLAGS.arms[::-1]
        for arm in order:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in datasets[arm]:
                pass
            results[arm]["wall_seconds"].append(time.perf_counter() - wall)
            results[arm]["cpu_seconds"].append(time.process_time() - cpu)
    print(json.dumps({"images": len(files), "arms": results}))


def format_images(folder):
    """scikit-image's photos and every generated format: `{name: path}`."""
    import numpy as np
    from PIL import Image
    from pixel_reference import skimage_files
    from pixel_reference import write_format_images

    photo = np.asarray(Image.open(skimage_files()[0]).convert("RGB"))
    files = {f"skimage/{os.path.basename(f)}": f for f in skimage_files()}
    generated = write_format_images(os.path.join(folder, "formats"), photo)
    files.update({f"generated/{k}": v for k, v in generated.items()})
    return files


def format_exactness(files):
    """Old and new input against the release's, file by file."""
    import numpy as np
    import tensorflow as tf

    from keras_aim import AIMImageConverter
    from keras_aim.data.decoding import read_rgb

    converter = AIMImageConverter()
    rows, inputs = {}, {"old": [], "new": [], "names": []}
    for name, path in files.items():
        new = np.asarray(converter.tf_transform(read_rgb(path)))
        reference = release_pixels(path)
        rows[name] = {"new": compare(to_levels(new), reference)}
        try:
            old = np.asarray(old_transform(path))
        except tf.errors.InvalidArgumentError as error:
            # The old pipeline skipped such files (ignore_errors).
            rows[name]["old"] = {"error": str(error).splitlines()[0][:100]}
            continue
        rows[name]["old"] = compare(to_levels(old), reference)
        inputs["old"].append(old)
        inputs["new"].append(new)
        inputs["names"].append(name)
    return rows, {k: np.stack(v) for k, v in inputs.items()}


def format_table(rows):
    groups = {}
    for name, row in rows.items():
        stem = os.path.basename(name).rsplit(".", 1)
        kind = (
            f"{stem[1].upper()} ({'skimage' if 'skimage' in name else stem[0]})"
        )
        groups.setdefault(kind, []).append(row)
    lines = []
    for kind, group in sorted(groups.items()):
        cells = [kind, str(len(group))]
        for arm in ("old", "new"):
            read = [r[arm] for r in group if "error" not in r[arm]]
            if not read:
                cells += ["unreadable", "-", f"0/{len(group)}"]
                continue
            mean = sum(r["mean"] for r in read) / len(read)
            worst = max(r["max"] for r in read)
            same = sum(r["identical"] for r in read)
            cells += [f"{mean:.3f}", f"{worst:.0f}", f"{same}/{len(group)}"]
        lines.append(cells)
    header = ["format", "files", "old mean", "old max", "old identical"]
    header += ["new mean", "new max", "new identical"]
    return bench_utils.table(header, lines)


def model_agreement(inputs, width):
    """A small random AIM classifier on the old and the new input."""
    import keras
    import numpy as np

    import keras_aim

    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(224, 224, 3),
        patch_size=14,
        hidden_dim=width,
        num_layers=4,
        num_heads=max(1, width // 64),
    )
    model = keras_aim.AIMImageClassifier(
        backbone, num_classes=1000, probe_layers=[2, 3]
    )
    logits = {
        arm: np.asarray(model.predict(inputs[arm], batch_size=8, verbose=0))
        for arm in ("old", "new")
    }
    result = {"model": f"AIM width {width}, 4 blocks, patch 14, random"}
    for group in ("skimage", "generated"):
        chosen = np.char.startswith(inputs["names"].astype(str), group)
        old, new = logits["old"][chosen], logits["new"][chosen]
        change = np.abs(old - new)
        result[group] = {
            "images": int(chosen.sum()),
            "top1_agreement": float(np.mean(old.argmax(-1) == new.argmax(-1))),
            "max_abs_logit_change": float(change.max()),
            "mean_abs_logit_change": float(change.mean()),
            "logit_std": float(new.std()),
        }
    return result


def summarise(runs, images):
    """Medians over every timed pass of every round, and the table."""
    rows, summary = [], {}
    for arm, results in runs.items():
        walls = [t for r in results for t in r["wall_seconds"]]
        cpus = [t for r in results for t in r["cpu_seconds"]]
        summary[arm] = {
            "images_per_second": images / statistics.median(walls),
            "cpu_ms_per_image": 1000 * statistics.median(cpus) / images,
            "mean_abs_levels": results[-1]["mean_abs_levels"],
            "max_abs_levels": results[-1]["max_abs_levels"],
            "identical_images": results[-1]["identical_images"],
        }
    old = summary.get("old")
    old_walls = [t for r in runs.get("old", []) for t in r["wall_seconds"]]
    for arm, row in summary.items():
        if old:
            row["ratio_to_old"] = (
                row["images_per_second"] / old["images_per_second"]
            )
            # Each pass against the old arm's pass of the same round and
            # index (run next to it): less sensitive to load that drifts.
            walls = [t for r in runs[arm] for t in r["wall_seconds"]]
            row["paired_ratio_to_old"] = statistics.median(
                a / b for a, b in zip(old_walls, walls)
            )
            row["cpu_ratio_to_old"] = (
                old["cpu_ms_per_image"] / row["cpu_ms_per_image"]
            )
        rows.append(
            [
                arm,
                f"{row['images_per_second']:.1f}",
                f"{row['ratio_to_old']:.2f}x" if old else "-",
                f"{row['paired_ratio_to_old']:.2f}x" if old else "-",
                f"{row['cpu_ms_per_image']:.1f}",
                f"{row['cpu_ratio_to_old']:.2f}x" if old else "-",
                f"{row['mean_abs_levels']:.3f}",
                f"{row['max_abs_levels']:.0f}",
                f"{100 * row['identical_images']:.0f}%",
            ]
        )
    header = ["arm", "images/s", "vs old", "vs old (paired)", "CPU ms/image"]
    header += ["vs old (CPU)"]
    header += ["mean |diff| (levels)", "max |diff|", "identical images"]
    return summary, bench_utils.table(header, rows)


def write_markdown(path, payload):
    """The tables of a results JSON as a short markdown file."""
    agreement = payload["model_agreement"] or {}
    lines = [
        "# Evaluation input: old tf path against the library "
        f"({payload['environment']['date']})",
        "",
        f"{payload['settings']['images']} ImageNet-like JPEGs, "
        f"{payload['settings']['rounds']} rounds x "
        f"{payload['settings']['passes']} passes, "
        f"{payload['environment']['cpus']} CPUs (a GIL-free job got "
        f"{min(payload['thread_scaling']):.2f}-"
        f"{max(payload['thread_scaling']):.2f}x from 2 threads), Pillow "
        f"{payload['settings']['pillow']}. Differences are to the release's "
        "`val_transforms`, in uint8 levels.",
        "",
        payload["table"],
    ]
    if payload["format_table"]:
        lines += ["", "Per file format:", "", payload["format_table"]]
    for group in ("skimage", "generated"):
        if group in agreement:
            row = agreement[group]
            lines += [
                "",
                f"{agreement['model']}, {row['images']} {group} images, old "
                f"input against new: top-1 agreement "
                f"{100 * row['top1_agreement']:.0f}%, largest logit change "
                f"{row['max_abs_logit_change']:.3f} (logit std "
                f"{row['logit_std']:.2f}).",
            ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def thread_scaling(seconds=2.0):
    """Throughput of 2 threads over 1 on GIL-free work (SHA-256): how
    many cores this process actually gets right now (2.0 when idle)."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    data = os.urandom(1 << 22)

    def rate(threads):
        with ThreadPoolExecutor(threads) as pool:
            begin, count = time.perf_counter(), 0
            while time.perf_counter() - begin < seconds:
                list(pool.map(lambda _: hashlib.sha256(data), range(8)))
                count += 8
            return count / (time.perf_counter() - begin)

    one, two, one_again = rate(1), rate(2), rate(1)
    return two / ((one + one_again) / 2)


def main(argv):
    del argv
    if FLAGS.worker:
        return worker()
    for arm in FLAGS.arms:
        if arm not in ARMS:
            raise app.UsageError(f"--arms: {arm!r} is not one of {ARMS}.")
    script = os.path.abspath(__file__)
    runs = {arm: [] for arm in FLAGS.arms}
    with tempfile.TemporaryDirectory() as folder:
        write_photos(folder, FLAGS.images)
        scaling = [thread_scaling()]
        for round_index in range(FLAGS.rounds):
            order = list(FLAGS.arms)
            if round_index % 2:
                order.reverse()
            args = [
                "--worker=all",
                f"--arms={','.join(order)}",
                f"--folder={folder}",
                f"--passes={FLAGS.passes}",
                f"--batch_size={FLAGS.batch_size}",
            ]
            result = bench_utils.run_worker(script, "tensorflow", args)
            for arm, arm_result in result["arms"].items():
                runs[arm].append(arm_result)
                speed = FLAGS.images / statistics.median(
                    arm_result["wall_seconds"]
                )
                print(f"round {round_index + 1} {arm}: {speed:.1f} images/s")
            scaling.append(thread_scaling())
    summary, table = summarise(runs, FLAGS.images)
    print(table)
    scaling = [round(v, 2) for v in scaling]
    print(f"2-thread speedup of GIL-free work: {scaling} (2.0: 2 free cores)")
    formats, agreement = {}, None
    if FLAGS.formats:
        with tempfile.TemporaryDirectory() as folder:
            formats, inputs = format_exactness(format_images(folder))
        print(format_table(formats))
        agreement = model_agreement(inputs, FLAGS.model_width)
        print(json.dumps(agreement))
    payload = {
        "settings": {
            "images": FLAGS.images,
            "rounds": FLAGS.rounds,
            "passes": FLAGS.passes,
            "batch_size": FLAGS.batch_size,
            "sizes": SIZES,
            "pillow": pillow_version(),
        },
        "environment": bench_utils.environment(),
        "thread_scaling": scaling,
        "summary": summary,
        "runs": runs,
        "table": table,
        "formats": formats,
        "format_table": format_table(formats) if formats else None,
        "model_agreement": agreement,
    }
    bench_utils.write_json(FLAGS.output, payload)
    write_markdown(os.path.splitext(FLAGS.output)[0] + ".md", payload)


if __name__ == "__main__":
    define_flags()
    app.run(main)
