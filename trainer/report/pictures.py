"""The report's pictures: test images themselves, where runs disagree and where each one is most wrong.

- For each pair of runs, the test images the second gets right and the first wrong, and the reverse: what one run
  has learnt that the other has not. The first run's answer is shown in red (the right one, the true class, is
  the other run's).
- For each run, its most confident mistakes: the wrong answers it gave the highest probability (from
  test_predictions.npz's `probabilities`; a run written before they were kept shows the mistakes of its most
  frequent confusions instead).

The images come from the TFDS test split the runs were tested on, found on this machine: the run's own
--data_dir, $DATA_DIR (the Makefile's), $TFDS_DATA_DIR, then TFDS's default folder; a split is used only if its
labels are the runs' own, image for image. Nothing is downloaded: without the data the report says where it
looked and goes on without pictures.
"""

import math
import os

import numpy as np

from trainer import storage
from trainer.report.figures import plt, save

SHOWN = 24       # images per figure at most
COLUMNS = 8
RIGHT, WRONG = "#1a7f37", "#cf222e"


# ---- the test images ---------------------------------------------------------------------------------------------

def data_dirs(runs, environ=None):
    """Where to look for the prepared TFDS data set, most specific first, each once."""
    environ = os.environ if environ is None else environ
    found = [(run.metrics.get("flags") or {}).get("data_dir") for run in runs]
    found += [environ.get("DATA_DIR"), environ.get("TFDS_DATA_DIR"),
              os.path.join(os.path.expanduser("~"), "tensorflow_datasets")]
    return list(dict.fromkeys(d for d in found if d))


def load_test_images(runs, environ=None):
    """(uint8 images [N, 28, 28], None) of the runs' test split, or (None, why there are none)."""
    from trainer.monitoring import logs
    from trainer.training.fashion_mnist import DATASET
    with logs.quiet_native_startup():  # TensorFlow and TFDS, only when the report draws pictures, without the
        import tensorflow as tf             # notices TensorFlow's start-up prints (no GPU driver, ...)
        import tensorflow_datasets as tfds

        from trainer.training import data
        tf.config.list_physical_devices("GPU")

    labels = runs[0].labels
    looked = []
    for folder in data_dirs(runs, environ):
        if not storage.is_gcs(folder) and not os.path.isdir(os.path.join(folder, DATASET)):
            looked.append(folder)
            continue
        try:
            builder = tfds.builder(DATASET, data_dir=folder)
            if not builder.is_prepared() or builder.info.splits["test"].num_examples != len(labels):
                looked.append(folder)
                continue
            images, test_labels = data.load(builder, "test")
        except Exception as error:  # unreadable or unreachable (a gs:// folder without credentials): look on
            looked.append(f"{folder} ({type(error).__name__})")
            continue
        if np.array_equal(test_labels, labels):
            return images[..., 0], None
        looked.append(f"{folder} (other labels)")
    return None, ("the runs' test images were not found (looked in " + ", ".join(looked or ["no folder"]) +
                  "): pass the folder the data set was prepared in as DATA_DIR=... to draw them.")


# ---- choosing images -----------------------------------------------------------------------------------------------

def confidence(run):
    """Each test image's probability of the class the run chose, or None without recorded probabilities."""
    if getattr(run, "probabilities", None) is None:
        return None
    return run.probabilities.astype(np.float32)[np.arange(len(run.predicted)), run.predicted]


def disagreements(wrong_run, right_run):
    """Indices of the images `right_run` gets right and `wrong_run` wrong, the most confident wrong answers
    first (in test order without probabilities)."""
    chosen = np.flatnonzero((right_run.predicted == right_run.labels) & (wrong_run.predicted != wrong_run.labels))
    sure = confidence(wrong_run)
    return chosen[np.argsort(-sure[chosen], kind="stable")] if sure is not None else chosen


def worst_mistakes(run):
    """(indices of the run's mistakes to show, whether ranked by confidence)."""
    wrong = np.flatnonzero(run.predicted != run.labels)
    sure = confidence(run)
    if sure is not None:
        return wrong[np.argsort(-sure[wrong], kind="stable")], True
    # No probabilities: its most frequent confusions (true -> predicted), a row of images of each.
    pairs = run.labels[wrong] * 100 + run.predicted[wrong]
    values, counts = np.unique(pairs, return_counts=True)
    rank = {v: r for r, v in enumerate(values[np.argsort(-counts, kind="stable")])}
    seen = {}
    within = [seen.setdefault(pair, []).append(i) or len(seen[pair]) - 1 for i, pair in enumerate(pairs)]
    order = sorted(range(len(wrong)), key=lambda i: (within[i] >= COLUMNS, rank[pairs[i]], i))
    return wrong[order], False


# ---- drawing -------------------------------------------------------------------------------------------------------

def image_grid(images, indices, captions, title, path):
    """Up to SHOWN images in rows of COLUMNS, each with its caption lines [(text, colour)], under `title`."""
    indices = list(indices)[:SHOWN]
    rows = max(1, math.ceil(len(indices) / COLUMNS))
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(COLUMNS * 1.32, rows * 1.78 + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index, lines in zip(axes.flat, indices, captions):
        ax.imshow(images[index], cmap="binary", vmin=0, vmax=255, interpolation="nearest")
        for row, (text, colour) in enumerate(lines):
            ax.text(0.5, -0.06 - 0.17 * row, text, transform=ax.transAxes, ha="center", va="top", fontsize=7.5,
                    color=colour)
    if not indices:
        axes.flat[0].text(0, 0.5, "none", fontsize=10)
    fig.suptitle(title, fontsize=10.5)
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=2.4)
    return save(fig, path)


def _short(text, width=16):
    return text if len(text) <= width else text[:width - 1] + "…"


def _answer(run, index, classes, sure):
    said = classes[run.predicted[index]]
    return f"{_short(run.name, 9)}: {said}" + (f" {sure[index]:.2f}" if sure is not None else "")


def disagreement_figure(wrong_run, right_run, images, path):
    classes = wrong_run.class_names
    chosen = disagreements(wrong_run, right_run)
    sure = confidence(wrong_run)
    captions = [[(f"true: {classes[wrong_run.labels[i]]}", RIGHT), (_answer(wrong_run, i, classes, sure), WRONG)]
                for i in chosen[:SHOWN]]
    title = (f"{right_run.name} right, {wrong_run.name} wrong: {len(chosen):,} test images"
             + (f" ({SHOWN} shown" + (f", {wrong_run.name}'s most confident first)" if sure is not None else ")")
                if len(chosen) > SHOWN else ""))
    image_grid(images, chosen, captions, title, path)
    return len(chosen)


def mistakes_figure(run, images, path):
    classes = run.class_names
    chosen, ranked = worst_mistakes(run)
    sure = confidence(run)
    captions = [[(f"true: {classes[run.labels[i]]}", RIGHT),
                 (f"said: {classes[run.predicted[i]]}" + (f" {sure[i]:.2f}" if ranked else ""), WRONG)]
                for i in chosen[:SHOWN]]
    kind = "its most confident mistakes" if ranked else "mistakes of its most frequent confusions"
    image_grid(images, chosen, captions, f"{run.name}: {kind} ({len(chosen):,} mistakes in all)", path)


# ---- the report's section --------------------------------------------------------------------------------------------

FIGURE_PATTERNS = ("right_*_wrong_*.png", "mistakes_*.png")


def add_section(doc, runs, out_dir, names, environ=None):
    """Appends the "Test images" section to the report's document (render.build's blocks), drawing its figures."""
    doc.append(("h2", "Test images"))
    images, missing = load_test_images(runs, environ)
    if images is None:
        doc.append(("p", missing))
        return
    if len(runs) > 1:
        doc.append(("p", "Where two runs disagree: the test images one run gets right and the other wrong, with "
                         "the true class (green) and the wrong run's answer (red)" +
                         (", its probability beside it, the most confident first." if all(
                             confidence(r) is not None for r in runs) else ".")))
        pictures = []
        for i, first in enumerate(runs):
            for j in range(i + 1, len(runs)):
                second = runs[j]
                for wrong, right, wrong_name, right_name in ((first, second, names[i], names[j]),
                                                             (second, first, names[j], names[i])):
                    file = f"right_{right_name}_wrong_{wrong_name}.png"
                    count = disagreement_figure(wrong, right, images, os.path.join(out_dir, file))
                    pictures.append((file, f"{count} test images {right.name} gets right and {wrong.name} wrong"))
        doc.append(("images", pictures))
    doc.append(("p", "Each run's worst mistakes: the wrong answers it was surest of (true class green, its answer "
                     "red, with the probability it gave it)."))
    pictures = []
    for run, name in zip(runs, names):
        file = f"mistakes_{name}.png"
        mistakes_figure(run, images, os.path.join(out_dir, file))
        pictures.append((file, f"The most confident mistakes of {run.name}"))
    doc.append(("images", pictures))
