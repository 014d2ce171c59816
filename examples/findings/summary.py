"""`findings.json`'s content from the runs, and the verdicts on the
paper's claims."""

from . import ablations
from .stats import mean_std
from .stats import permutation_p_value
from .stats import spearman


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
    claims = _claims(capacity, steps, correlation, points, config)
    return {
        "points": points,
        "spearman_loss_vs_probe": correlation,
        "spearman_p_value": permutation_p_value(losses, tops),
        "capacity": capacity,
        "steps": steps,
        "ablations": ablations.compare(config, results),
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
