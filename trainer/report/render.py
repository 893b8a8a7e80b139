"""The comparison report: one document model rendered twice, as Markdown (figures beside it) and as one
self-contained HTML page (figures embedded as base64 PNG, CSS inline, no external reference).

McNemar's test is run on every pair of runs (not only against the first); with more than one pair the table adds
Holm-adjusted p-values, which keep the chance of any false "significant" over all pairs at the 5% level.
"""

import base64
import datetime
import glob
import html
import os
import re


from trainer.report import figures, pictures, stats
from trainer.errors import UserError

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
FIGURE_PATTERNS = ("per_class_accuracy.png", "confusion_*.png", "training_curves.png", *pictures.FIGURE_PATTERNS)


# ---- the document ----------------------------------------------------------------------------------------------

def _num(value, fmt, default="-"):
    return default if value is None else fmt.format(value)


def _best(values, pick):
    present = [v for v in values if v is not None]
    return pick(present) if len(present) > 1 else None


def _bold_if(text, condition):
    return f"**{text}**" if condition else text


def slug(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "run"


def figure_names(runs):
    """File name of each run's confusion matrix figure, unique even when names slug alike."""
    names, used = [], set()
    for run in runs:
        base, candidate, i = slug(run.name), slug(run.name), 2
        while candidate in used:
            candidate, i = f"{base}_{i}", i + 1
        used.add(candidate)
        names.append(candidate)
    return names


def build(runs, comparisons, out_dir):
    """Draws the figures into out_dir and returns the document: a list of blocks."""
    doc = []
    add = doc.append
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    add(("h1", "Fashion-MNIST: comparison of " + ", ".join(f"`{r.name}`" for r in runs)))
    add(("p", f"Written {now} by `python -m trainer.commands.compare` from {len(runs)} finished run(s), all tested "
              f"on the same {len(runs[0].labels):,} test images."))

    add(("h2", "Runs"))
    add(("table", ["run", "location", "model", "recipe", "epochs", "batch", "train examples", "seed", "strategy",
                   "finished"],
         [[f"`{r.name}`", f"`{r.url}`", _num(r.metrics.get("model"), "{}"), _num(r.metrics.get("recipe"), "{}"),
           _num(r.metrics.get("epochs"), "{}"), _num(r.metrics.get("batch_size"), "{}"),
           _num(r.metrics.get("train_examples"), "{:,}"), _num(r.metrics.get("seed"), "{}"),
           _num(r.metrics.get("strategy"), "{}"), _num(r.metrics.get("finished_at"), "{}")] for r in runs],
         "lllllrrrll"))

    add(("h2", "Results"))
    accuracies = [r.metrics.get("test_accuracy") for r in runs]
    losses = [r.metrics.get("test_loss") for r in runs]
    best_acc, best_loss = _best(accuracies, max), _best(losses, min)
    add(("table", ["run", "model", "test accuracy", "test loss", "parameters", "training time (s)", "examples/s"],
         [[f"`{r.name}`", _num(r.metrics.get("model"), "{}"),
           _bold_if(_num(acc, "{:.4f}"), acc is not None and acc == best_acc),
           _bold_if(_num(loss, "{:.4f}"), loss is not None and loss == best_loss),
           _num(r.metrics.get("params"), "{:,}"), _num(r.metrics.get("train_seconds"), "{:,.1f}"),
           _num(r.metrics.get("examples_per_second"), "{:,.0f}")] for r, acc, loss in zip(runs, accuracies, losses)],
         "llrrrrr"))
    add(("p", "Best value in bold. Training time is the wall-clock time of `fit()` on the machine of each run, "
              "so it is comparable only between runs on the same hardware."))

    add(("h2", "McNemar's test"))
    if comparisons:
        add(("p", "Do two runs differ in error rate on the same test images? Only the images exactly one of the two "
                  "runs gets right count: *b* (only the first right) and *c* (only the second right). If *b* + *c* "
                  f"< {stats.EXACT_BELOW} the exact binomial test is used (statistic: min(*b*, *c*)), else "
                  "the chi-square test with continuity correction (statistic: (|*b* − *c*| − 1)² / (*b* + *c*), "
                  "1 degree of freedom)."))
        header = ["first", "second", "both right", "only first right (b)", "only second right (c)", "both wrong",
                  "test", "statistic", "p-value"]
        holm = comparisons[0].holm_p is not None
        if holm:
            header.append("Holm-adjusted p")
        rows = []
        for c in comparisons:
            g, t = c.agreement, c.test
            row = [f"`{c.a.name}`", f"`{c.b.name}`", f"{g.both_right:,}", f"{g.only_a_right:,}",
                   f"{g.only_b_right:,}", f"{g.both_wrong:,}", t.method, stats.statistic_text(t),
                   _bold_if(stats.format_p(t.p_value), not holm and t.p_value < stats.ALPHA)]
            if holm:
                row.append(_bold_if(stats.format_p(c.holm_p), c.holm_p < stats.ALPHA))
            rows.append(row)
        add(("table", header, rows, "llrrrrlrr" + ("r" if holm else "")))
        add(("ul", [f"`{c.a.name}` vs `{c.b.name}`: {c.verdict()}" for c in comparisons]))
    else:
        add(("p", "Only one run: McNemar's test needs two."))

    classes = runs[0].class_names
    add(("h2", "Per-class accuracy"))
    header = ["class"] + [f"`{r.name}`" for r in runs]
    two = len(runs) == 2
    if two:
        header.append(f"`{runs[1].name}` − `{runs[0].name}`")
    rows = []
    for cls in classes:
        values = [r.metrics.get("per_class_accuracy", {}).get(cls) for r in runs]
        best = _best(values, max)
        row = [cls] + [_bold_if(_num(v, "{:.3f}"), v is not None and v == best) for v in values]
        if two:
            row.append(_num(None if None in values else values[1] - values[0], "{:+.3f}"))
        rows.append(row)
    add(("table", header, rows, "l" + "r" * (len(header) - 1)))
    figures.per_class_accuracy(runs, os.path.join(out_dir, "per_class_accuracy.png"))
    add(("images", [("per_class_accuracy.png", "Per-class test accuracy, grouped bars, one bar per run")]))

    add(("h2", "Confusion matrices"))
    add(("p", "Rows: true class; columns: predicted class; each cell counts test images. Correct answers (the "
              "diagonal) are shaded blue, errors red, each on its own scale so the errors stay visible."))
    images = []
    names = figure_names(runs)
    for run, name in zip(runs, names):
        file = f"confusion_{name}.png"
        figures.confusion_matrix(run, os.path.join(out_dir, file))
        images.append((file, f"Confusion matrix of {run.name}"))
    add(("images", images))
    if len(runs) > 1:
        add(("p", f"Change against `{runs[0].name}`: each run's counts minus `{runs[0].name}`'s. Green cells are "
                  "improvements (more correct answers on the diagonal, fewer errors off it), purple ones are "
                  "regressions."))
        images = []
        for run, name in zip(runs[1:], names[1:]):
            file = f"confusion_change_{name}_vs_{names[0]}.png"
            figures.confusion_change(runs[0], run, os.path.join(out_dir, file))
            images.append((file, f"Change in confusion counts, {run.name} minus {runs[0].name}"))
        add(("images", images))

    pictures.add_section(doc, runs, out_dir, names)

    add(("h2", "Training curves"))
    if any(figures.has_history(r) for r in runs):
        validation = any(k.startswith("val_") for r in runs for row in r.metrics.get("history") or [] for k in row)
        add(("p", "Loss and accuracy on the training data at the end of each epoch (as Keras reports them: the "
                  "mean over the epoch's batches)" + ("; validation dashed." if validation else
                                                       ". The runs recorded no validation curves.")))
        figures.training_curves(runs, os.path.join(out_dir, "training_curves.png"))
        add(("images", [("training_curves.png", "Loss and accuracy per epoch")]))
    else:
        add(("p", "No run recorded a per-epoch history."))

    notes = stats.warnings(runs)
    if notes:
        add(("h2", "Warnings"))
        add(("ul", notes))
    return doc


# ---- Markdown ----------------------------------------------------------------------------------------------------

def to_markdown(doc):
    parts = []
    for block in doc:
        kind = block[0]
        if kind == "h1":
            parts.append(f"# {block[1]}")
        elif kind == "h2":
            parts.append(f"## {block[1]}")
        elif kind == "p":
            parts.append(block[1])
        elif kind == "ul":
            parts.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            _, header, rows, align = block
            cell = lambda text: str(text).replace("|", "\\|")
            lines = ["| " + " | ".join(cell(h) for h in header) + " |",
                     "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
            parts.append("\n".join(lines))
        elif kind == "images":
            parts.append("\n".join(f"![{alt}]({file})" for file, alt in block[1]))
    return "\n\n".join(parts) + "\n"


# ---- HTML --------------------------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 1180px; margin: 24px auto; padding: 0 20px; line-height: 1.45; font-size: 15px; }
h1 { font-size: 1.6em; border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #eaeef2; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: 13.5px; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; vertical-align: top; }
th { background: #f6f8fa; text-align: left; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfbfc; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .92em; background: #f3f4f6;
       padding: 0 3px; border-radius: 3px; word-break: break-all; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.figures img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
.figures.many img { max-width: calc(50% - 8px); }
ul { padding-left: 1.4em; }
"""


def _inline(text):
    """Escapes text for HTML, then turns the Markdown subset used here (`code`, **bold**, *em*) into tags."""
    text = html.escape(str(text), quote=True).replace("\\|", "|")
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def to_html(doc, out_dir):
    title = re.sub(r"[`*]", "", next(block[1] for block in doc if block[0] == "h1"))
    body = []
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_inline(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            _, header, rows, align = block
            cls = lambda a: ' class="r"' if a == "r" else ""
            head = "".join(f"<th{cls(a)}>{_inline(h)}</th>" for h, a in zip(header, align))
            lines = ["<tr>" + "".join(f"<td{cls(a)}>{_inline(c)}</td>" for c, a in zip(row, align)) + "</tr>"
                     for row in rows]
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>")
        elif kind == "images":
            many = " many" if len(block[1]) > 1 else ""
            images = []
            for file, alt in block[1]:
                with open(os.path.join(out_dir, file), "rb") as f:
                    data = base64.b64encode(f.read()).decode("ascii")
                images.append(f'<img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}">')
            body.append(f'<div class="figures{many}">{"".join(images)}</div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# ---- writing -----------------------------------------------------------------------------------------------------

def write(runs, comparisons, out_dir):
    """Writes report.md, its figures and report.html into out_dir; returns the two report paths."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        for pattern in FIGURE_PATTERNS:  # figures of an earlier report (other run names) must not linger
            for stale in glob.glob(os.path.join(glob.escape(out_dir), pattern)):
                os.remove(stale)
        doc = build(runs, comparisons, out_dir)
        paths = []
        for name, text in ((MARKDOWN_FILE, to_markdown(doc)), (HTML_FILE, to_html(doc, out_dir))):
            path = os.path.join(out_dir, name)
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
            paths.append(path)
        return paths
    except OSError as error:
        raise UserError(f"cannot write the report to {out_dir} ({error.strerror or error}): choose another --out "
                        "folder.") from None
