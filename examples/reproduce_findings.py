"""The AIM paper's findings, reproduced at micro scale by one command.

    python examples/reproduce_findings.py             # under 1 h, 2 CPU cores
    python examples/reproduce_findings.py --quick     # a couple of minutes
    python examples/reproduce_findings.py --preset=aim_600m,aim_1b,aim_3b \\
        --dataset=/data/imagenet --image_size=224 --steps=100000 ...

The paper (El-Nouby et al., 2024) claims that (1) feature quality scales
with capacity and with the amount of pre-training, and (2) the pre-training
objective's value correlates with downstream performance; its ablations
add that normalised targets beat raw pixels, an MLP pixel head beats a
linear one, prefix-causal beats plain causal attention for a bidirectional
probe, and raster order beats spiral, checkerboard and random. This
script runs, for every seed:

- capacity: one run per trunk size (`--widths`, or `--preset` names), the
  same recipe and data;
- steps: each run keeps checkpoints at `--checkpoint_fractions` of its
  steps; every checkpoint is a (size, step) point with its held-out
  next-patch loss and frozen-trunk attentive-probe top-1;
- correlation: the Spearman rank correlation between held-out loss and
  probe top-1 over every point;
- ablations: one run per variant at the default size, everything else
  fixed; the paired difference to the default run of the same seed.

Writes into `--output_dir`: `findings.json` (`points`,
`spearman_loss_vs_probe`, `ablations`, and the per-size and per-ablation
statistics), `findings.md` (the tables and a verdict per finding),
`loss_vs_capacity.png`, `loss_vs_steps.png`, `loss_vs_probe.png`, and
`runs/<name>/` per run (its log, checkpoints and `result.json`). A killed
study continues where it stopped: finished runs are reused (their
`result.json` records the settings), an unfinished one resumes from its
last checkpoint. Exit status 2 with a one-line message on bad input.
"""

import json
import math
import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import example_utils  # noqa: E402

# name -> (what it changes, the paper's default, the variant, settings).
ABLATIONS = {
    "targets": ("target", "normalised", "raw", {"normalize_targets": False}),
    "head": ("pixel head", "MLP", "linear", {"head_num_layers": 0}),
    "attention": ("attention", "prefix", "causal", {"attention": "causal"}),
    "order_spiral": (
        "token order",
        "raster",
        "spiral",
        {"token_order": "spiral"},
    ),
    "order_checkerboard": (
        "token order",
        "raster",
        "checkerboard",
        {"token_order": "checkerboard"},
    ),
    "order_random": (
        "token order",
        "raster",
        "random",
        {"token_order": "random"},
    ),
}
# The paper's ablations (ImageNet-1k, AIM-0.6B), linear / attentive probe
# top-1, default then variant, where it reports them.
PAPER = {
    "head": "MLP 70.0 / 78.2 vs linear 64.0 / 75.4",
    "order_spiral": "raster 69.5 / 77.4 vs spiral 67.7 / 76.3",
    "order_checkerboard": "raster 69.5 / 77.4 vs checkerboard 68.2 / 76.0",
    "order_random": "raster 69.5 / 77.4 vs random 65.8 / 75.7",
    "targets": "normalised pixels beat raw pixels",
    "attention": "prefix-causal beats causal for a bidirectional probe",
}

DEFAULTS = dict(
    output_dir="runs/findings",
    quick=False,
    seeds=3,
    preset=None,
    dataset="digits",
    widths=(32, 64, 128),
    num_layers=2,
    num_heads=4,
    patch_size=4,
    image_size=None,
    head_hidden_dim=128,
    head_num_layers=1,
    batch_size=64,
    steps=300,
    learning_rate=1e-3,
    checkpoint_fractions=(0.25, 0.5, 1.0),
    probe_epochs=60,
    probe_learning_rate=1e-2,
    ablations=tuple(ABLATIONS),
    ablation_size=None,
    verbose=1,
)
QUICK = dict(
    seeds=2,
    widths=(8, 16, 24),
    num_layers=1,
    head_hidden_dim=16,
    batch_size=32,
    steps=8,
    checkpoint_fractions=(0.5, 1.0),
    probe_epochs=2,
    ablations=("head",),
)
# Settings a finished run must share with the study to be reused.
RUN_KEYS = (
    "dataset",
    "num_layers",
    "num_heads",
    "patch_size",
    "image_size",
    "head_hidden_dim",
    "head_num_layers",
    "batch_size",
    "steps",
    "learning_rate",
    "checkpoint_fractions",
    "probe_epochs",
    "probe_learning_rate",
)


# --- The study: which runs, and one run -------------------------------------


def study_config(**overrides):
    """The settings of a study: `DEFAULTS`, then `QUICK`, then overrides."""
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown settings {unknown}; known: {list(DEFAULTS)}")
    config = dict(DEFAULTS)
    if overrides.get("quick"):
        config.update(QUICK)
    config.update({k: v for k, v in overrides.items() if v is not None})
    config["seeds"] = _positive(config["seeds"], "--seeds")
    config["steps"] = _positive(config["steps"], "--steps")
    config["probe_epochs"] = _positive(config["probe_epochs"], "--probe_epochs")
    if config["image_size"] is None:
        config["image_size"] = example_utils.default_image_size(
            config["dataset"]
        )
    config["sizes"] = _sizes(config)
    if len(config["sizes"]) < 1:
        raise ValueError("Give at least one size (--widths or --preset).")
    fractions = sorted({float(f) for f in config["checkpoint_fractions"]})
    if not fractions or fractions[0] <= 0 or fractions[-1] != 1.0:
        raise ValueError(
            "--checkpoint_fractions must be in (0, 1] and end with 1.0; got "
            f"{list(config['checkpoint_fractions'])}."
        )
    config["checkpoint_fractions"] = tuple(fractions)
    config["checkpoint_steps"] = sorted(
        {max(1, round(f * config["steps"])) for f in fractions}
    )
    bad = [a for a in config["ablations"] if a not in ABLATIONS]
    if bad:
        raise ValueError(
            f"Unknown --ablations {bad}; known: {', '.join(ABLATIONS)}."
        )
    config["ablations"] = tuple(config["ablations"])
    names = [s["name"] for s in config["sizes"]]
    default = config["ablation_size"] or names[len(names) // 2]
    if str(default) not in names:
        raise ValueError(
            f"--ablation_size must be one of the sizes {names}; got "
            f"{default!r}."
        )
    config["ablation_size"] = str(default)
    return config


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return value


def _sizes(config):
    """`[{"name", architecture...}]` from `--preset` names or `--widths`."""
    if config["preset"]:
        from keras_aim.models.aim.aim_presets import PRESETS

        names = config["preset"]
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        sizes = []
        for name in names:
            if name not in PRESETS:
                raise ValueError(
                    f"--preset must list preset names ({', '.join(PRESETS)}); "
                    f"got {name!r}."
                )
            sizes.append({"name": name, "preset": name})
        return sizes
    sizes = []
    for width in config["widths"]:
        width = _positive(int(width), "--widths")
        if width % config["num_heads"]:
            raise ValueError(
                f"--widths: {width} does not divide by --num_heads="
                f"{config['num_heads']}."
            )
        sizes.append({"name": f"w{width}", "hidden_dim": width})
    return sizes


def planned_runs(config):
    """Every run of the study: `[{"name", "size", "seed", "ablation"}]`."""
    runs = []
    for seed in range(config["seeds"]):
        for size in config["sizes"]:
            runs.append(
                {
                    "name": f"{size['name']}_seed{seed}",
                    "size": size,
                    "seed": seed,
                    "ablation": None,
                }
            )
        size = next(
            s for s in config["sizes"] if s["name"] == config["ablation_size"]
        )
        for ablation in config["ablations"]:
            runs.append(
                {
                    "name": f"{size['name']}_seed{seed}_{ablation}",
                    "size": size,
                    "seed": seed,
                    "ablation": ablation,
                }
            )
    return runs


def run_settings(config, run):
    """What a finished run must match to be reused."""
    settings = {k: config[k] for k in RUN_KEYS}
    settings["checkpoint_fractions"] = list(settings["checkpoint_fractions"])
    settings.update(size=run["size"], seed=run["seed"])
    settings["ablation"] = run["ablation"]
    import keras

    settings["backend"] = keras.backend.backend()
    return settings


def build_models(config, run):
    """The backbone and compiled pretrainer of one run."""
    import keras

    from keras_aim import optimizers
    from keras_aim.models.aim.aim_pretrainer import AIMPretrainer

    keras.utils.set_random_seed(run["seed"])
    size = run["size"]
    backbone = example_utils.build_backbone(
        (config["image_size"], config["image_size"], 3),
        size.get("preset"),
        patch_size=config["patch_size"],
        hidden_dim=size.get("hidden_dim"),
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
    )
    head = {
        "head_hidden_dim": config["head_hidden_dim"],
        "head_num_layers": config["head_num_layers"],
    }
    if run["ablation"]:
        head.update(ABLATIONS[run["ablation"]][3])
    pretrainer = AIMPretrainer(backbone, seed=run["seed"], **head)
    pretrainer.compile(
        optimizer=optimizers.pretraining_optimizer(
            config["steps"],
            config["batch_size"],
            base_learning_rate=config["learning_rate"],
            base_batch_size=config["batch_size"],
            warmup_fraction=0.05,
        )
    )
    return backbone, pretrainer


def held_out_images(config):
    """The probe's test images: never seen in pre-training (digits, photos)."""
    from keras_aim.data.labelled import labelled_images

    test = labelled_images(
        config["dataset"], "test", image_size=config["image_size"]
    )
    images, _ = test.to_arrays()
    return images


def probe_splits(config, backbone, seed):
    """The labelled train and test splits, read as `probe_accuracy` does."""
    from keras_aim.data.labelled import labelled_images
    from keras_aim.models.aim.aim_image_converter import default_image_converter

    converter = default_image_converter(backbone.image_shape)
    return [
        labelled_images(
            config["dataset"], split, image_converter=converter, seed=seed
        )
        for split in ("train", "test")
    ]


def execute_run(config, run, held_out, folder):
    """Trains one run (resumably) and measures every checkpoint."""
    import functools

    from keras_aim import data
    from keras_aim import training
    from keras_aim.probing.repeated import RepeatedProbe

    backbone, pretrainer = build_models(config, run)
    dataset = functools.partial(
        data.pretraining_dataset,
        config["dataset"],
        image_size=config["image_size"],
        batch_size=config["batch_size"],
        seed=run["seed"],
    )
    steps = config["checkpoint_steps"]
    fingerprint = run_settings(config, run)
    begin = time.time()
    # A checkpoint at each study step: the window ends there (log_every
    # divides each one), and every checkpoint is kept.
    log_every = math.gcd(*steps) if len(steps) > 1 else steps[0]
    training.train(
        pretrainer,
        lambda start_batch: dataset(start_batch=start_batch),
        config["steps"],
        folder,
        checkpoint_every=log_every,
        fingerprint=fingerprint,
        max_to_keep=config["steps"] // log_every + 1,
        tensorboard=False,
        verbose=0,
        log_every=log_every,
    )
    train_seconds = time.time() - begin
    manager = training.CheckpointManager(
        os.path.join(folder, training.CHECKPOINT_DIR), read_only=True
    )
    found = dict(manager.checkpoints())
    # An ablation is compared at its end only; the default-recipe runs at
    # every study step (the steps finding and the correlation).
    measured = steps[-1:] if run["ablation"] else steps
    probe = RepeatedProbe(
        backbone,
        *probe_splits(config, backbone, run["seed"]),
        epochs=config["probe_epochs"],
        learning_rate=config["probe_learning_rate"],
        seed=run["seed"],
    )
    points = []
    for step in measured:
        if step not in found:
            raise RuntimeError(
                f"Run {run['name']} has no checkpoint at step {step}."
            )
        manager.restore(pretrainer, found[step], fingerprint=fingerprint)
        loss = pretrainer.evaluate(
            held_out, batch_size=config["batch_size"], verbose=0
        )
        points.append(
            {
                "step": step,
                "heldout_loss": float(
                    loss[0] if isinstance(loss, list) else loss
                ),
                "probe_top1": float(probe()["top1"]),
            }
        )
    return {
        "settings": fingerprint,
        "parameters": int(backbone.count_params()),
        "points": points,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.time() - begin, 1),
    }


def load_finished(path, settings):
    """A finished run's result, or `None` (missing, damaged, other settings)."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    if result.get("settings") != settings:
        return None
    return result


def run_study(config, progress=print):
    """Runs (or reuses) every run; returns `{name: result}`."""
    import shutil

    from keras_aim.utils.io_utils import write_json

    runs = planned_runs(config)
    held_out = None
    results = {}
    for index, run in enumerate(runs, 1):
        folder = os.path.join(config["output_dir"], "runs", run["name"])
        path = os.path.join(folder, "result.json")
        settings = json.loads(json.dumps(run_settings(config, run)))
        result = load_finished(path, settings)
        reused = result is not None
        if not reused:
            if os.path.exists(path):  # other settings: start the run over
                shutil.rmtree(folder)
            if held_out is None:
                held_out = held_out_images(config)
            result = execute_run(config, run, held_out, folder)
            result["settings"] = settings
            write_json(path, result)
        results[run["name"]] = {**result, "run": run}
        last = result["points"][-1]
        what = run["ablation"] or "default"
        how = "reused" if reused else f"{result['seconds']:.0f} s"
        progress(
            f"[{index}/{len(runs)}] {run['size']['name']} seed {run['seed']} "
            f"({what}): held-out loss {last['heldout_loss']:.4f}, probe top-1 "
            f"{100 * last['probe_top1']:.1f}% ({how})"
        )
    return results


# --- Statistics --------------------------------------------------------------


def _ranks(values):
    """Average ranks (ties share the mean rank), as Spearman needs."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y):
    """Spearman's rank correlation (Pearson's on average ranks)."""
    import numpy as np

    if len(x) != len(y) or len(x) < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(np.sum(rx * rx) * np.sum(ry * ry)))
    return float(np.sum(rx * ry) / denominator) if denominator else float("nan")


def permutation_p_value(x, y, rounds=2000, seed=0):
    """Two-sided p-value of a Spearman correlation by permutation."""
    import numpy as np

    observed = spearman(x, y)
    if not np.isfinite(observed):
        return float("nan")
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=float)
    hits = sum(
        abs(spearman(x, rng.permutation(y))) >= abs(observed) - 1e-12
        for _ in range(rounds)
    )
    return (hits + 1) / (rounds + 1)


def mean_std(values):
    """Mean and sample standard deviation (0 for a single value)."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


# Two-sided 95% Student t quantiles by degrees of freedom (SciPy is not
# a dependency of the examples); 1.96 beyond the table.
T_95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}


def t_quantile(degrees):
    """The 97.5% quantile of Student's t (the nearest tabled df below)."""
    known = [d for d in sorted(T_95) if d <= degrees]
    return T_95[known[-1]] if degrees <= 30 else 1.96


def verdict(mean, std, count, expected_sign):
    """`reproduces`, `opposite` or `within noise`: whether the 95% t
    interval of the paired differences excludes 0, and on which side."""
    if count < 2:
        return "one seed: no verdict"
    half_width = t_quantile(count - 1) * std / math.sqrt(count)
    if abs(mean) <= half_width or mean == 0:
        return "within noise"
    return (
        "reproduces" if math.copysign(1, mean) == expected_sign else "opposite"
    )


def _seed_statistics(points, size, step, with_parameters=False):
    """Mean and spread over seeds of one (size, step) point."""
    mine = [p for p in points if p["size"] == size and p["step"] == step]
    loss, loss_std = mean_std([p["heldout_loss"] for p in mine])
    top, top_std = mean_std([p["probe_top1"] for p in mine])
    row = {"size": size} if with_parameters else {"size": size, "step": step}
    if with_parameters:
        row["parameters"] = mine[0]["parameters"]
    row.update(
        heldout_loss=loss,
        heldout_loss_std=loss_std,
        probe_top1=top,
        probe_top1_std=top_std,
    )
    return row


def summarise(config, results):
    """`findings.json`'s content from the runs' results."""
    points = []
    for result in results.values():
        run = result["run"]
        if run["ablation"]:
            continue
        for point in result["points"]:
            points.append(
                {
                    "size": run["size"]["name"],
                    "parameters": result["parameters"],
                    "seed": run["seed"],
                    **point,
                }
            )
    losses = [p["heldout_loss"] for p in points]
    tops = [p["probe_top1"] for p in points]
    correlation = spearman(losses, tops)
    final = config["steps"]
    capacity = [
        _seed_statistics(points, size["name"], final, with_parameters=True)
        for size in config["sizes"]
    ]
    steps = [
        _seed_statistics(points, size["name"], step)
        for size in config["sizes"]
        for step in config["checkpoint_steps"]
    ]
    ablations = []
    base = config["ablation_size"]
    for name in config["ablations"]:
        what, default, variant, _ = ABLATIONS[name]
        differences = []
        default_tops, variant_tops = [], []
        for seed in range(config["seeds"]):
            a = results[f"{base}_seed{seed}"]["points"][-1]["probe_top1"]
            b = results[f"{base}_seed{seed}_{name}"]["points"][-1]["probe_top1"]
            default_tops.append(a)
            variant_tops.append(b)
            differences.append(b - a)
        mean, std = mean_std(differences)
        ablations.append(
            {
                "name": name,
                "what": what,
                "default": default,
                "variant": variant,
                "default_top1": mean_std(default_tops)[0],
                "variant_top1": mean_std(variant_tops)[0],
                "difference_mean": mean,
                "difference_std": std,
                "differences": differences,
                # The paper: the default is better, so variant - default < 0.
                "verdict": verdict(mean, std, len(differences), -1),
                "paper": PAPER[name],
            }
        )
    claims = _claims(capacity, steps, correlation, points, config)
    return {
        "points": points,
        "spearman_loss_vs_probe": correlation,
        "spearman_p_value": permutation_p_value(losses, tops),
        "capacity": capacity,
        "steps": steps,
        "ablations": ablations,
        "claims": claims,
        "config": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in config.items()
            if k != "sizes"
        },
    }


def _monotonic(values, decreasing):
    pairs = zip(values, values[1:])
    return all((b < a) if decreasing else (b > a) for a, b in pairs)


def _claims(capacity, steps, correlation, points, config):
    """Plain-words verdicts on the paper's two claims."""
    claims = []
    loss = [c["heldout_loss"] for c in capacity]
    top = [c["probe_top1"] for c in capacity]
    if len(capacity) > 1:
        holds = _monotonic(loss, True) and _monotonic(top, False)
        claims.append(
            {
                "claim": "capacity: larger trunks reach a lower held-out loss "
                "and a higher probe accuracy",
                "holds": holds,
                "detail": "from the smallest to the largest: loss "
                + ", ".join(f"{v:.4f}" for v in loss)
                + "; probe top-1 "
                + ", ".join(f"{100 * v:.1f}%" for v in top),
            }
        )
    by_size = {}
    for row in steps:
        by_size.setdefault(row["size"], []).append(row)
    if len(config["checkpoint_steps"]) > 1:
        loss_down = all(
            _monotonic([r["heldout_loss"] for r in rows], True)
            for rows in by_size.values()
        )
        probe_up = all(
            rows[-1]["probe_top1"] > rows[0]["probe_top1"]
            for rows in by_size.values()
        )
        claims.append(
            {
                "claim": "steps: more pre-training lowers the held-out loss "
                "and raises the probe accuracy, at every size",
                "holds": loss_down and probe_up,
                "detail": f"loss falls at every checkpoint: {loss_down}; probe "
                f"higher at the end than at the first checkpoint: {probe_up}",
            }
        )
    claims.append(
        {
            "claim": "objective vs downstream: lower held-out loss goes with "
            "higher probe accuracy",
            "holds": bool(correlation < -0.5),
            "detail": f"Spearman {correlation:.3f} over {len(points)} points",
        }
    )
    return claims


# --- Report ------------------------------------------------------------------


def _pm(mean, std, scale=1.0, digits=1):
    return f"{scale * mean:.{digits}f} +- {scale * std:.{digits}f}"


def write_markdown(path, findings, seconds):
    lines = ["# AIM's findings at micro scale", ""]
    config = findings["config"]
    lines.append(
        f"{config['seeds']} seeds; {config['dataset']} at "
        f"{config['image_size']}px; {config['steps']} steps of "
        f"{config['batch_size']}; attentive probe {config['probe_epochs']} "
        f"epochs at {config['probe_learning_rate']}; wall time "
        f"{seconds / 60:.1f} min. Mean +- standard deviation over seeds."
    )
    lines += ["", "## Claims", ""]
    for claim in findings["claims"]:
        mark = "holds" if claim["holds"] else "does not hold"
        lines.append(f"- {claim['claim']}: **{mark}** ({claim['detail']}).")
    lines += [
        "",
        "## Capacity",
        "",
        "| size | parameters | held-out loss | probe top-1 (%) |",
        "|---|---:|---:|---:|",
    ]
    for row in findings["capacity"]:
        lines.append(
            f"| {row['size']} | {row['parameters']:,} | "
            f"{_pm(row['heldout_loss'], row['heldout_loss_std'], digits=4)} | "
            f"{_pm(row['probe_top1'], row['probe_top1_std'], 100)} |"
        )
    lines += [
        "",
        "## Steps",
        "",
        "| size | step | held-out loss | probe top-1 (%) |",
        "|---|---:|---:|---:|",
    ]
    for row in findings["steps"]:
        lines.append(
            f"| {row['size']} | {row['step']} | "
            f"{_pm(row['heldout_loss'], row['heldout_loss_std'], digits=4)} | "
            f"{_pm(row['probe_top1'], row['probe_top1_std'], 100)} |"
        )
    lines += [
        "",
        "## Objective vs downstream",
        "",
        f"Spearman rank correlation of held-out loss and probe top-1 over "
        f"{len(findings['points'])} (size, step, seed) points: "
        f"{findings['spearman_loss_vs_probe']:.3f} (permutation p = "
        f"{findings['spearman_p_value']:.4f}).",
        "",
        "## Ablations (probe top-1 at the default size, paired by seed)",
        "",
        "| ablation | default | variant | default (%) | variant (%) | "
        "variant - default (points) | verdict | paper (linear / attentive) |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for row in findings["ablations"]:
        lines.append(
            f"| {row['what']} | {row['default']} | {row['variant']} | "
            f"{100 * row['default_top1']:.1f} | "
            f"{100 * row['variant_top1']:.1f} | "
            f"{_pm(row['difference_mean'], row['difference_std'], 100)} | "
            f"{row['verdict']} | {row['paper']} |"
        )
    lines += [
        "",
        "Verdicts: *reproduces* when the 95% Student t interval of the "
        "paired differences excludes zero on the paper's side, *opposite* "
        "when it excludes zero on the other side, *within noise* otherwise.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_plots(output_dir, findings):
    """The three figures; returns their paths."""
    from keras_aim.utils.plots import plot_points

    capacity = findings["capacity"]
    files = {}
    files["capacity"] = plot_points(
        os.path.join(output_dir, "loss_vs_capacity.png"),
        {
            "held-out loss": (
                [c["parameters"] for c in capacity],
                [c["heldout_loss"] for c in capacity],
                [c["heldout_loss_std"] for c in capacity],
            )
        },
        "trunk parameters",
        "held-out next-patch loss",
        "capacity",
        log_x=True,
        labels=[c["size"] for c in capacity],
    )
    series = {}
    for row in findings["steps"]:
        x, y, e = series.setdefault(row["size"], ([], [], []))
        x.append(row["step"])
        y.append(row["heldout_loss"])
        e.append(row["heldout_loss_std"])
    files["steps"] = plot_points(
        os.path.join(output_dir, "loss_vs_steps.png"),
        series,
        "pre-training step",
        "held-out next-patch loss",
        "pre-training steps",
    )
    scatter = {}
    for point in findings["points"]:
        x, y, _ = scatter.setdefault(point["size"], ([], [], None))
        x.append(point["heldout_loss"])
        y.append(100 * point["probe_top1"])
    files["scatter"] = plot_points(
        os.path.join(output_dir, "loss_vs_probe.png"),
        scatter,
        "held-out next-patch loss",
        "attentive probe top-1 (%)",
        f"Spearman {findings['spearman_loss_vs_probe']:.2f}",
        lines=False,
    )
    return files


def run(progress=print, **overrides):
    """Runs the study; returns `findings` (what `findings.json` holds)."""
    from keras_aim import training
    from keras_aim.utils.io_utils import write_json

    config = study_config(**overrides)
    output_dir = training.prepare_output_dir(config["output_dir"])
    config["output_dir"] = output_dir
    begin = time.time()
    with training.RunLock(output_dir):
        results = run_study(config, progress)
        findings = summarise(config, results)
        seconds = time.time() - begin
        findings["seconds"] = round(seconds, 1)
        findings["files"] = write_plots(output_dir, findings)
        findings["files"]["markdown"] = os.path.join(output_dir, "findings.md")
        findings["files"]["json"] = os.path.join(output_dir, "findings.json")
        write_markdown(findings["files"]["markdown"], findings, seconds)
        write_json(findings["files"]["json"], findings)
    return findings


def define_flags():
    d = DEFAULTS
    flags.DEFINE_string("output_dir", d["output_dir"], "Where to write.")
    flags.DEFINE_bool(
        "quick",
        d["quick"],
        "Tiny settings (a couple of minutes): " + str(QUICK),
    )
    flags.DEFINE_integer(
        "seeds", None, f"Seeds per run (default {d['seeds']})."
    )
    flags.DEFINE_string(
        "preset",
        None,
        "Comma-separated preset names as the sizes (architecture only, "
        "random init), instead of --widths.",
    )
    flags.DEFINE_string(
        "dataset", d["dataset"], "digits, photos, tfds:NAME or a folder."
    )
    flags.DEFINE_list("widths", None, f"Trunk widths (default {d['widths']}).")
    flags.DEFINE_integer("num_layers", None, "Trunk blocks.")
    flags.DEFINE_integer("num_heads", None, "Attention heads.")
    flags.DEFINE_integer("patch_size", None, "Patch side.")
    flags.DEFINE_integer(
        "image_size", None, "Image side (default: the data's)."
    )
    flags.DEFINE_integer("head_hidden_dim", None, "Pixel-head width.")
    flags.DEFINE_integer("head_num_layers", None, "Pixel-head MLP blocks.")
    flags.DEFINE_integer("batch_size", None, "Pre-training batch.")
    flags.DEFINE_integer("steps", None, "Pre-training steps per run.")
    flags.DEFINE_float("learning_rate", None, "Peak learning rate.")
    flags.DEFINE_list(
        "checkpoint_fractions", None, "Fractions of the steps to measure at."
    )
    flags.DEFINE_integer("probe_epochs", None, "Attentive-probe epochs.")
    flags.DEFINE_float("probe_learning_rate", None, "Probe learning rate.")
    flags.DEFINE_list(
        "ablations", None, f"Ablations to run (default all: {list(ABLATIONS)})."
    )
    flags.DEFINE_string(
        "ablation_size", None, "The size the ablations use (default: middle)."
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    overrides = {name: FLAGS[name].value for name in DEFAULTS if name in FLAGS}
    for name in ("widths", "checkpoint_fractions"):
        if overrides.get(name) is not None:
            caster = int if name == "widths" else float
            try:
                overrides[name] = tuple(caster(v) for v in overrides[name])
            except ValueError as error:
                raise ValueError(f"--{name}: {error}") from error
    findings = run(**overrides)
    print(f"\nWall time {findings['seconds'] / 60:.1f} min.")
    for claim in findings["claims"]:
        mark = "holds" if claim["holds"] else "does NOT hold"
        print(f"- {claim['claim']}: {mark} ({claim['detail']})")
    for row in findings["ablations"]:
        print(
            f"- {row['default']} vs {row['variant']} ({row['what']}): "
            f"{100 * row['difference_mean']:+.1f} +- "
            f"{100 * row['difference_std']:.1f} points, {row['verdict']}"
        )
    print("Files:")
    for name, path in findings["files"].items():
        print(f"  {name}: {path}")


if __name__ == "__main__":
    define_flags()
    app.run(
        lambda argv: example_utils.run_script(main, argv),
        flags_parser=example_utils.parse_flags,
    )
