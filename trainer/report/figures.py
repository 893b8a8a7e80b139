"""The comparison report's figures, drawn with matplotlib (Agg: no display needed) and saved as PNG.

Every function takes the runs (trainer.report.comparison.Run) and a file path, draws one figure and returns the path. A
run's colour is the same in every figure: its position in matplotlib's tab10 palette.
"""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

from trainer.training import evaluation  # noqa: E402

DPI = 120
PALETTE = plt.get_cmap("tab10").colors
# A run's curves: training solid, validation dashed.
TRAIN_STYLE, VALIDATION_STYLE = "-", "--"


def run_color(index):
    return PALETTE[index % len(PALETTE)]


def save(fig, path):
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white", metadata={"Software": None})
    plt.close(fig)
    return path


def per_class_accuracy(runs, path):
    """Horizontal grouped bars: one group per class (top to bottom in class order), one bar per run."""
    classes = runs[0].class_names
    k = len(runs)
    group = 0.8
    height = group / k
    fig, ax = plt.subplots(figsize=(8.0, 0.9 + len(classes) * (0.22 * k + 0.25)))
    label_size = 8 if k <= 3 else 6.5
    for i, run in enumerate(runs):
        values = [run.metrics["per_class_accuracy"].get(c, np.nan) for c in classes]
        y = np.arange(len(classes)) - group / 2 + height * (i + 0.5)
        bars = ax.barh(y, values, height=height * 0.92, color=run_color(i), label=run.name)
        if k <= 6:
            ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2, fontsize=label_size)
    ax.set_yticks(np.arange(len(classes)), classes)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("test accuracy of the class (fraction of its test images classified correctly)")
    ax.set_title("Per-class test accuracy", pad=26 if k <= 4 else 40)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(k, 4), frameon=False)
    return save(fig, path)


def confusion_matrix(run, path):
    """Counts heatmap, true class down, predicted class across: correct cells in blue, errors in red.

    The two are shaded on their own scales (errors are tens, correct answers hundreds), so the errors stay visible.
    """
    classes = run.class_names
    n = len(classes)
    matrix = _confusion(run, n)
    diagonal = np.eye(n, dtype=bool)
    fig, ax = plt.subplots(figsize=(7.0, 6.2))
    correct_norm = mcolors.Normalize(0, max(1, matrix[diagonal].max()))
    error_norm = mcolors.Normalize(0, max(1, matrix[~diagonal].max()))
    ax.imshow(np.ma.masked_where(~diagonal, matrix), cmap="Blues", norm=correct_norm)
    ax.imshow(np.ma.masked_where(diagonal, matrix), cmap="Reds", norm=error_norm)
    for t in range(n):
        for p in range(n):
            value = matrix[t, p]
            shade = (correct_norm if t == p else error_norm)(value)
            ax.text(p, t, f"{value}", ha="center", va="center", fontsize=9.5 if value < 1000 else 8.5,
                    color="white" if shade > 0.55 else ("#888888" if value == 0 else "black"))
    _class_axes(ax, classes)
    accuracy = run.metrics.get("test_accuracy")
    title = f"{run.name}: confusion matrix" + (f" (test accuracy {accuracy:.4f})" if accuracy is not None else "")
    ax.set_title(title)
    return save(fig, path)


def confusion_change(base, other, path):
    """other's confusion matrix minus base's: green where `other` has more correct or fewer errors, purple worse."""
    classes = base.class_names
    n = len(classes)
    change = _confusion(other, n) - _confusion(base, n)
    # Better = more on the diagonal, fewer off it: flip the sign of the errors so that green always means better.
    goodness = np.where(np.eye(n, dtype=bool), change, -change)
    limit = max(1, np.abs(goodness).max())
    fig, ax = plt.subplots(figsize=(7.0, 6.2))
    ax.imshow(goodness, cmap="PRGn", vmin=-limit, vmax=limit)
    for t in range(n):
        for p in range(n):
            value = change[t, p]
            strong = abs(goodness[t, p]) / limit > 0.6
            ax.text(p, t, f"{value:+d}" if value else "0", ha="center", va="center", fontsize=9.5,
                    color="white" if strong else ("#888888" if value == 0 else "black"))
    _class_axes(ax, classes)
    ax.set_title(f"{other.name} minus {base.name}: change in counts\n"
                 f"(green: {other.name} better, purple: {other.name} worse)", fontsize=11)
    return save(fig, path)


def _confusion(run, n):
    """The run's confusion matrix: metrics.json's, else counted from its test predictions."""
    recorded = run.metrics.get("confusion_matrix")
    if recorded:
        return np.asarray(recorded, dtype=np.int64)
    return evaluation.confusion_matrix(run.labels, run.predicted, n)


def _class_axes(ax, classes):
    """Class names on both axes (true class down, predicted across), the cells parted by white lines."""
    n = len(classes)
    ax.set_xticks(range(n), classes, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)


def has_history(run):
    return bool(run.metrics.get("history"))


def training_curves(runs, path):
    """Loss and accuracy per epoch, one colour per run; validation (val_loss / val_accuracy) dashed if recorded."""
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2))
    any_validation = False
    max_epoch = 1
    for i, run in enumerate(runs):
        history = run.metrics.get("history") or []
        epochs = [row.get("epoch", j + 1) for j, row in enumerate(history)]
        max_epoch = max([max_epoch] + epochs)
        for ax, key in zip(axes, ("loss", "accuracy")):
            for prefix, style, suffix in (("", TRAIN_STYLE, "training"), ("val_", VALIDATION_STYLE, "validation")):
                points = [(e, row[prefix + key]) for e, row in zip(epochs, history)
                          if row.get(prefix + key) is not None]
                if not points:
                    continue
                any_validation |= bool(prefix)
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, color=run_color(i), marker="o", markersize=3.5,
                        label=f"{run.name} ({suffix})")
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{'Training and validation' if any_validation else 'Training'} {key} per epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlim(0.5, max_epoch + 0.5)
        ax.grid(alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, -0.02 - 0.05 * math.ceil(len(labels) / 4)),
               ncol=min(4, len(labels)), frameon=False)
    fig.tight_layout()
    return save(fig, path)
