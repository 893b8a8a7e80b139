"""The comparison report's pictures of test images (trainer/report/pictures.py): which images each figure shows,
and a report drawn from runs tested on the real test split, its images found through the runs' --data_dir."""

import json
import os

import numpy as np
import pytest

from support.data import DATA_DIR
from trainer.commands import compare
from trainer.report import comparison, pictures

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def a_run(name, predicted, labels, probabilities=None):
    metrics = {"per_class_accuracy": dict.fromkeys(CLASSES, 0.5)}
    return comparison.Run(name, name, metrics, np.asarray(predicted), np.asarray(labels), probabilities)


def one_hot_ish(predicted, confidence):
    """Probabilities [N, 10] that give each predicted class its `confidence`, the rest spread evenly."""
    predicted = np.asarray(predicted)
    result = np.tile((1 - np.asarray(confidence))[:, None] / 9, (1, 10))
    result[np.arange(len(predicted)), predicted] = confidence
    return result.astype(np.float16)


def test_disagreements_are_the_images_only_the_other_run_gets_right_its_surest_mistakes_first():
    labels = [0, 1, 2, 3, 4, 5]
    right = a_run("b", [0, 1, 2, 3, 9, 5], labels)
    wrong = a_run("a", [0, 9, 9, 3, 9, 9], labels, one_hot_ish([0, 9, 9, 3, 9, 9], [.9, .4, .8, .9, .9, .6]))
    assert list(pictures.disagreements(wrong, right)) == [2, 5, 1]  # image 4: both wrong; by a's confidence
    assert list(pictures.disagreements(right, wrong)) == []
    unranked = a_run("a", wrong.predicted, labels)
    assert list(pictures.disagreements(unranked, right)) == [1, 2, 5]  # test order without probabilities


def test_worst_mistakes_rank_by_confidence_or_else_by_the_most_frequent_confusion():
    labels = [6, 6, 6, 0, 0, 1, 2]
    predicted = [0, 0, 6, 6, 0, 3, 4]
    ranked, by_confidence = pictures.worst_mistakes(
        a_run("r", predicted, labels, one_hot_ish(predicted, [.5, .99, .9, .7, .9, .6, .95])))
    assert by_confidence and list(ranked) == [1, 6, 3, 5, 0]
    ranked, by_confidence = pictures.worst_mistakes(a_run("r", predicted, labels))
    assert not by_confidence and list(ranked) == [0, 1, 3, 5, 6]  # shirt -> t-shirt twice, then one each


def test_without_the_test_images_the_report_says_where_it_looked(tmp_path):
    runs = [a_run("a", [0, 1], [0, 1]), a_run("b", [0, 0], [0, 1])]
    doc = []
    pictures.add_section(doc, runs, str(tmp_path), ["a", "b"], environ={"DATA_DIR": str(tmp_path / "none")})
    assert doc[0] == ("h2", "Test images")
    assert doc[1][0] == "p" and "were not found" in doc[1][1] and str(tmp_path / "none") in doc[1][1]
    assert not list(tmp_path.glob("*.png"))


@pytest.fixture(scope="module")
def real_runs(fashion, tmp_path_factory):
    """Two synthetic runs on the real test split (its labels), as trainer.commands.compare reads them: one right on 80%
    of the images with probabilities, one right on 90% written before probabilities were kept."""
    labels = fashion[1][1]
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("picture-runs")
    paths = []
    for name, share, keep_probabilities in (("first", 0.8, True), ("second", 0.9, False)):
        right = rng.random(len(labels)) < share
        predicted = np.where(right, labels, (labels + 1 + rng.integers(0, 8, len(labels))) % 10)
        folder = root / name
        folder.mkdir()
        arrays = {"class_id": predicted.astype(np.uint8), "label": labels.astype(np.uint8)}
        if keep_probabilities:
            arrays["probabilities"] = one_hot_ish(predicted, rng.uniform(0.3, 1.0, len(labels)))
        np.savez_compressed(folder / "test_predictions.npz", **arrays)
        metrics = {"model": "mlp", "test_accuracy": float(np.mean(right)), "per_class_accuracy":
                   dict.fromkeys(CLASSES, 0.5), "flags": {"data_dir": DATA_DIR}, "history": []}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        paths.append(str(folder))
    return paths


def test_the_report_shows_the_disagreements_of_each_pair_and_each_runs_worst_mistakes(real_runs, tmp_path, capsys,
                                                                                        monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)  # found through the runs' own --data_dir
    out = tmp_path / "report"
    compare.main(["compare", *real_runs, "--out", str(out)])
    assert "report:" in capsys.readouterr().out
    markdown = (out / "report.md").read_text()
    section = markdown[markdown.index("## Test images"):markdown.index("## Training curves")]
    files = ["right_second_wrong_first.png", "right_first_wrong_second.png", "mistakes_first.png",
             "mistakes_second.png"]
    assert [line[line.index("(") + 1:-1] for line in section.splitlines() if line.startswith("![")] == files
    for file in files:
        with open(out / file, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(out / file) > 20_000  # 24 images drawn, not an empty frame
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == markdown.count("![")
    # The first run kept its probabilities: its figures rank by them; the second's falls back to its confusions.
    runs = comparison.read_runs(real_runs, ["first", "second"], str(tmp_path / "scratch"))
    assert runs[0].probabilities is not None and runs[1].probabilities is None
    assert pictures.worst_mistakes(runs[0])[1] and not pictures.worst_mistakes(runs[1])[1]


def test_without_probabilities_each_row_shows_one_of_the_most_frequent_confusions():
    labels = np.array([6] * 20 + [0] * 12 + [2] * 3)
    predicted = np.array([0] * 20 + [6] * 12 + [4] * 3)
    ranked, by_confidence = pictures.worst_mistakes(a_run("r", predicted, labels))
    shown = ranked[:pictures.SHOWN]
    rows = [set(zip(labels[shown[i:i + 8]], predicted[shown[i:i + 8]])) for i in range(0, 24, 8)]
    assert rows == [{(6, 0)}, {(0, 6)}, {(6, 0), (2, 4)}]  # 8 of the first pair, 8 of the second, then the rest
