"""Figures of a run, drawn with Matplotlib's Agg canvas (no display needed):
the loss curve, grids of next-patch reconstructions, confusion matrices,
label-efficiency curves."""

import math

import numpy as np

from keras_aim.models.aim.aim_image_converter import IMAGENET_MEAN
from keras_aim.models.aim.aim_image_converter import IMAGENET_STD
from keras_aim.training.run_dir import read_log


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_loss_curve(log_path, png_path, title="AIM pre-training"):
    """Draws the loss (log scale) and learning rate of `log.csv` to a PNG.

    Args:
        log_path: a `log.csv` written by `keras_aim.training.train`.
        png_path: the PNG to write.
        title: the figure title.

    Returns:
        `png_path`.
    """
    log = read_log(log_path)
    figure = _figure(7, 4)
    axis = figure.add_subplot(1, 1, 1)
    finite = np.isfinite(log["loss"]) & (log["loss"] > 0)
    axis.plot(log["step"][finite], log["loss"][finite], lw=1, color="C0")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("next-patch loss", color="C0")
    axis.grid(True, which="both", alpha=0.3)
    rate = axis.twinx()
    rate.plot(log["step"], log["learning_rate"], lw=1, color="C1")
    rate.set_ylabel("learning rate", color="C1")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(png_path)
    return png_path


def denormalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Undoes the ImageNet normalisation; returns values clipped to [0, 1]."""
    images = np.asarray(images, "float64") * np.asarray(std) + np.asarray(mean)
    return np.clip(images, 0.0, 1.0)


def plot_next_patch_grid(
    images,
    reconstructions,
    png_path,
    pairs_per_row=4,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    title=None,
):
    """Draws `original | next-patch prediction` pairs to a PNG grid.

    Args:
        images: `(B, H, W, C)` normalised images.
        reconstructions: `(B, H, W, C)` images rebuilt from the next-patch
            predictions in the same normalisation, e.g. from
            `AIMPretrainer.reconstruct` (each predicted patch de-normalised
            with its target patch's mean and std).
        png_path: the PNG to write.
        pairs_per_row: int, image pairs per grid row. Defaults to 4.
        mean: the normalisation mean to undo. Defaults to ImageNet's.
        std: the normalisation std to undo. Defaults to ImageNet's.
        title: optional figure title.

    Returns:
        `png_path`.
    """
    originals = denormalize(images, mean, std)
    reconstructions = denormalize(reconstructions, mean, std)
    count = len(originals)
    rows = math.ceil(count / pairs_per_row)
    cols = 2 * min(pairs_per_row, count)
    figure = _figure(1.3 * cols, 1.45 * rows + (0.4 if title else 0.0))
    for k in range(count):
        row, pair = divmod(k, pairs_per_row)
        for j, (image, label) in enumerate(
            ((originals[k], "original"), (reconstructions[k], "prediction"))
        ):
            axis = figure.add_subplot(rows, cols, row * cols + 2 * pair + j + 1)
            axis.imshow(image, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(label, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(png_path)
    return png_path


def plot_confusion_matrix(confusion, png_path, class_names=None, title=None):
    """Draws a confusion matrix (rows: true class, columns: predicted).

    Rows are normalised to fractions of each true class; class names label
    the axes when there are at most 40 classes.

    Args:
        confusion: `(C, C)` counts, `confusion[i, j]` = examples of class
            `i` predicted as `j`.
        png_path: the PNG to write.
        class_names: optional list of `C` names.
        title: optional figure title.

    Returns:
        `png_path`.
    """
    confusion = np.asarray(confusion, "float64")
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(
            f"`confusion` must be a square matrix; got shape {confusion.shape}."
        )
    num_classes = confusion.shape[0]
    totals = confusion.sum(axis=1, keepdims=True)
    fractions = np.divide(
        confusion, totals, out=np.zeros_like(confusion), where=totals > 0
    )
    size = min(12.0, 3.0 + 0.3 * num_classes)
    figure = _figure(size + 1.0, size)
    axis = figure.add_subplot(1, 1, 1)
    image = axis.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    if class_names is not None and num_classes <= 40:
        ticks = np.arange(num_classes)
        axis.set_xticks(ticks)
        axis.set_yticks(ticks)
        axis.set_xticklabels(class_names, rotation=90, fontsize=7)
        axis.set_yticklabels(class_names, fontsize=7)
        if num_classes <= 15:
            for i in range(num_classes):
                for j in range(num_classes):
                    if confusion[i, j]:
                        axis.text(
                            j,
                            i,
                            int(confusion[i, j]),
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if fractions[i, j] > 0.5 else "k",
                        )
    if title:
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(png_path)
    return png_path


def plot_points(
    png_path,
    series,
    x_label,
    y_label,
    title=None,
    log_x=False,
    lines=True,
    labels=None,
):
    """Draws named series of points, with optional error bars, to a PNG.

    Args:
        png_path: the PNG to write.
        series: `{name: (x, y, errors or None)}`.
        x_label, y_label: axis labels.
        title: optional figure title.
        log_x: bool, a logarithmic x axis.
        lines: bool, join each series' points (else a scatter plot).
        labels: optional text for each point of a single series.

    Returns:
        `png_path`.
    """
    if not series:
        raise ValueError("`series` is empty: nothing to plot.")
    figure = _figure(6, 4)
    axis = figure.add_subplot(1, 1, 1)
    for index, (name, (x, y, errors)) in enumerate(series.items()):
        if len(x) != len(y) or (errors is not None and len(errors) != len(y)):
            raise ValueError(f"Series {name!r} has mismatched lengths.")
        axis.errorbar(
            x,
            y,
            yerr=errors,
            fmt="o-" if lines else "o",
            color=f"C{index % 10}",
            capsize=3,
            label=name,
            alpha=0.9 if lines else 0.6,
        )
        for text, xi, yi in zip(labels or [], x, y):
            axis.annotate(
                str(text),
                (xi, yi),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
    if log_x:
        axis.set_xscale("log")
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.grid(True, alpha=0.3)
    if len(series) > 1:
        axis.legend(fontsize=8)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(png_path)
    return png_path


def plot_label_efficiency(arms, png_path, title=None):
    """Draws label-efficiency curves, one panel per method, to a PNG.

    Args:
        arms: `{arm name: probing.label_efficiency result}`; every result
            has the same `labels_per_class` points (ints, then `"all"`).
        png_path: the PNG to write.
        title: optional figure title.

    Returns:
        `png_path`.
    """
    if not arms:
        raise ValueError("`arms` is empty: nothing to plot.")
    first = next(iter(arms.values()))
    points = first["labels_per_class"]
    counts = [p for p in points if p != "all"]
    # "all" sits one step (in log space) past the largest count.
    last = max(counts) * 2.5 if counts else 1
    x = [last if p == "all" else p for p in points]
    methods = []
    for curve in arms.values():
        if curve["labels_per_class"] != points:
            raise ValueError("Every arm must have the same points.")
        methods += [m for m in curve["methods"] if m not in methods]
    figure = _figure(4.2 * len(methods), 4)
    for column, method in enumerate(methods):
        axis = figure.add_subplot(1, len(methods), column + 1)
        for index, (arm, curve) in enumerate(arms.items()):
            if method not in curve["methods"]:
                continue
            result = curve["methods"][method]
            axis.errorbar(
                x,
                100 * np.asarray(result["top1_mean"]),
                yerr=100 * np.asarray(result["top1_std"]),
                fmt="o-",
                color=f"C{index % 10}",
                capsize=3,
                label=arm,
            )
        axis.set_xscale("log")
        axis.set_xticks(x)
        axis.set_xticklabels([str(p) for p in points])
        axis.minorticks_off()
        axis.set_xlabel("labels per class")
        axis.set_ylabel("test top-1 (%)")
        axis.set_title(method)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(png_path)
    return png_path
