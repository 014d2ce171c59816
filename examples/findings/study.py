"""The study's settings, their checks, and the list of its runs."""

import scaffold

from .ablations import ABLATIONS

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
        config["image_size"] = scaffold.default_image_size(config["dataset"])
    config["sizes"] = _sizes(config)
    if len(config["sizes"]) < 1:
        raise ValueError("Give at least one size (--widths or --preset).")
    fractions = _numbers(
        config["checkpoint_fractions"], float, "--checkpoint_fractions"
    )
    fractions = sorted(set(fractions))
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


def _numbers(values, cast, name):
    """`values` (numbers, or strings from the command line) as `cast`."""
    if isinstance(values, str):
        values = values.split(",")
    try:
        return tuple(cast(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} takes comma-separated {cast.__name__}s; got "
            f"{list(values)!r}."
        ) from None


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
    for width in _numbers(config["widths"], int, "--widths"):
        width = _positive(width, "--widths")
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
