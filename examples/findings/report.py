"""The study's report: `findings.md` and the three plots."""

import os


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
        "variant - default (points) | verdict | held-out loss, variant - "
        "default | paper (linear / attentive) |",
        "|---|---|---|---:|---:|---:|---|---:|---|",
    ]
    for row in findings["ablations"]:
        loss = row.get("loss_difference")
        lines.append(
            f"| {row['what']} | {row['default']} | {row['variant']} | "
            f"{100 * row['default_top1']:.1f} | "
            f"{100 * row['variant_top1']:.1f} | "
            f"{_pm(row['difference_mean'], row['difference_std'], 100)} | "
            f"{row['verdict']} | "
            f"{_pm(*loss, digits=4) if loss else 'other scale'} | "
            f"{row['paper']} |"
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
