"""The paper's ablations: one change to the recipe each, and their
paired comparison with the default recipe."""

from . import stats

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
    # Not in the paper: one prefix length per batch, what a flash kernel
    # with one block mask per batch (TPU Splash) would need.
    "prefix_per_batch": (
        "prefix length",
        "per image",
        "per batch",
        {"prefix_sampling": "batch"},
    ),
}
# Not the paper's: no side to reproduce.
NEW = {"prefix_per_batch"}
# Ablations whose held-out loss is on the default's scale (raw targets'
# loss is not: it regresses unnormalised pixels).
SAME_LOSS_SCALE = {n for n in ABLATIONS if n != "targets"}
# The paper's ablations (ImageNet-1k, AIM-0.6B), linear / attentive probe
# top-1, default then variant, where it reports them.
PAPER = {
    "head": "MLP 70.0 / 78.2 vs linear 64.0 / 75.4",
    "order_spiral": "raster 69.5 / 77.4 vs spiral 67.7 / 76.3",
    "order_checkerboard": "raster 69.5 / 77.4 vs checkerboard 68.2 / 76.0",
    "order_random": "raster 69.5 / 77.4 vs random 65.8 / 75.7",
    "targets": "normalised pixels beat raw pixels",
    "attention": "prefix-causal beats causal for a bidirectional probe",
    "prefix_per_batch": "not ablated (one prefix length per image)",
}


def settings(name):
    """The `AIMPretrainer` arguments that ablation `name` changes."""
    return dict(ABLATIONS[name][3])


def compare(config, results):
    """Each ablation against the default run of the same seed, on the
    probe top-1 at the end of training (the paper: the default is better,
    so variant - default < 0)."""
    rows = []
    base = config["ablation_size"]
    for name in config["ablations"]:
        what, default, variant, _ = ABLATIONS[name]
        differences = []
        default_tops, variant_tops, losses = [], [], []
        for seed in range(config["seeds"]):
            a = results[f"{base}_seed{seed}"]["points"][-1]
            b = results[f"{base}_seed{seed}_{name}"]["points"][-1]
            default_tops.append(a["probe_top1"])
            variant_tops.append(b["probe_top1"])
            differences.append(b["probe_top1"] - a["probe_top1"])
            losses.append(b["heldout_loss"] - a["heldout_loss"])
        mean, std = stats.mean_std(differences)
        rows.append(
            {
                "name": name,
                "what": what,
                "default": default,
                "variant": variant,
                "default_top1": stats.mean_std(default_tops)[0],
                "variant_top1": stats.mean_std(variant_tops)[0],
                "difference_mean": mean,
                "difference_std": std,
                "differences": differences,
                "verdict": stats.verdict(
                    mean, std, len(differences), 0 if name in NEW else -1
                ),
                "paper": PAPER[name],
                # Variant - default held-out loss (mean, std), where the
                # two are on one scale; else None.
                "loss_difference": (
                    list(stats.mean_std(losses))
                    if name in SAME_LOSS_SCALE
                    else None
                ),
            }
        )
    return rows
