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

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scaffold  # noqa: E402
from findings import report  # noqa: E402
from findings import runs  # noqa: E402
from findings import summary  # noqa: E402
from findings.ablations import ABLATIONS  # noqa: E402
from findings.study import DEFAULTS  # noqa: E402
from findings.study import QUICK  # noqa: E402
from findings.study import study_config  # noqa: E402

# What the study writes, checked before any work (scaffold.run_folder).
OUTPUTS = {
    "findings.json": "file",
    "findings.md": "file",
    "loss_vs_capacity.png": "file",
    "loss_vs_steps.png": "file",
    "loss_vs_probe.png": "file",
    "runs": "folder",
}


def run(progress=print, **overrides):
    """Runs the study; returns `findings` (what `findings.json` holds).

    Args:
        progress: called with one line per finished (or reused) run.
        **overrides: any of `DEFAULTS`' names; `None` leaves the default
            (`QUICK`'s with `quick=True`).
    """
    from keras_aim.utils.io_utils import write_json

    config = study_config(**overrides)
    begin = time.time()
    with scaffold.run_folder(
        config["output_dir"], outputs=OUTPUTS
    ) as output_dir:
        config["output_dir"] = output_dir
        results = runs.run_study(config, progress)
        findings = summary.summarise(config, results)
        seconds = time.time() - begin
        findings["seconds"] = round(seconds, 1)
        files = report.write_plots(output_dir, findings)
        files["markdown"] = os.path.join(output_dir, "findings.md")
        files["json"] = os.path.join(output_dir, "findings.json")
        findings["files"] = files
        report.write_markdown(files["markdown"], findings, seconds)
        write_json(files["json"], findings)
    return findings


def print_findings(findings, settings=None):
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


def _shown(value):
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def setting(name, *args, **changes):
    """A study flag, unset unless given (so that --quick's value applies);
    its help shows the default and --quick's."""
    item = scaffold.flag(name, *args, default=None, **changes)
    shown = []
    if DEFAULTS[name] is not None:
        shown.append(f"default {_shown(DEFAULTS[name])}")
    if name in QUICK:
        shown.append(f"--quick {_shown(QUICK[name])}")
    if not shown:
        return item
    text = f"{item.help.rstrip('.')} ({'; '.join(shown)})."
    return dataclasses.replace(item, help=text)


SCRIPT = scaffold.Script(
    run,
    scaffold.flag("output_dir", default=DEFAULTS["output_dir"]),
    scaffold.flag(
        "quick",
        "bool",
        f"Tiny settings (a couple of minutes): {QUICK}.",
        default=False,
    ),
    setting("seeds", "integer", "Seeds per run.", minimum=1),
    setting(
        "preset",
        help="Comma-separated preset names as the sizes (architecture only, "
        "random init), instead of --widths.",
    ),
    scaffold.flag("dataset", default=DEFAULTS["dataset"]),
    setting(
        "widths",
        "list",
        "Trunk widths, one run each.",
        element="integer",
        minimum=1,
        maximum=scaffold.SHARED["hidden_dim"].maximum,
    ),
    setting("num_layers"),
    setting("num_heads"),
    setting("patch_size"),
    setting("image_size"),
    setting("head_hidden_dim"),
    setting("head_num_layers"),
    setting("batch_size", help="Pre-training batch."),
    setting("steps", help="Pre-training steps per run."),
    setting("learning_rate"),
    setting(
        "checkpoint_fractions",
        "list",
        "Fractions of the steps to measure at; the last is 1.0.",
        element="float",
        positive=True,
        maximum=1.0,
    ),
    setting("probe_epochs", help="Attentive-probe epochs."),
    setting("probe_learning_rate", help="Attentive-probe learning rate."),
    scaffold.flag(
        "ablations",
        "list",
        f"Ablations to run, of {', '.join(ABLATIONS)} (default all; --quick "
        f"{_shown(QUICK['ablations'])}).",
        default=None,
    ),
    setting(
        "ablation_size",
        "string",
        "The size the ablations use (default: the middle one).",
    ),
    report=print_findings,
)
main = SCRIPT.main
define_flags = SCRIPT.define_flags

if __name__ == "__main__":
    SCRIPT.cli()
