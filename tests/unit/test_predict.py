"""The batch prediction job (trainer.commands.predict): inputs of every kind, per-input errors, order, atomic output,
GCS, and (e2e) the command line's exit statuses.

The model is test_export.py's small CNN; the in-process tests call `batch.predict` directly.
"""

import base64
import json
import os

import numpy as np
import pytest

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from support.images import encode, product_photo, write_image_folder
from support.model import sample_images
from trainer.errors import RetryableError
from trainer.commands import predict
from trainer.serving import batch, inputs
from trainer.serving.output import Output


class Quiet:
    """A Progress stand-in that records updates instead of printing them."""
    tty = False

    def __init__(self):
        self.updates = []

    def update(self, summary, force=False):
        self.updates.append(summary.read)

    def close(self):
        pass


@pytest.fixture
def run_predict(exported_model):
    """batch.predict with the exported model, quietly: (inputs, output, **options) -> its Summary."""
    def run(inputs, output, **options):
        return batch.predict(exported_model, [str(i) for i in inputs], str(output), progress=Quiet(), **options)
    return run


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def expected_classes(signatures):
    """The classes serving_default gives images: (images) -> [class_id, ...]."""
    _, serve, _ = signatures
    return lambda images: serve(images=images)["class_id"].numpy().tolist()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The image folder of batch prediction's tests (`support.images.write_image_folder`)."""
    return write_image_folder(tmp_path_factory.mktemp("images"))


def test_a_folder_gives_one_line_per_image_in_order_with_errors_alone(folder, tmp_path, run_predict, expected_classes):
    images, _ = sample_images()
    output = tmp_path / "predictions.jsonl"
    summary = run_predict([folder], output)
    lines = read_lines(output)
    names = [os.path.relpath(line["name"], folder) for line in lines]
    assert names == [f"{i:02d}.png" for i in range(10)] + [
        "sub/10.png", "sub/11.jpg", "sub/bomb.png", "sub/empty.png", "sub/not-an-image.png", "sub/truncated.png"]
    predicted = [line for line in lines if "error" not in line]
    assert [line["class_id"] for line in predicted[:11]] == expected_classes(images[:11])
    for line in predicted:
        assert set(line) == {"name", "class_name", "class_id", "probabilities"}
        assert len(line["probabilities"]) == 10 and abs(sum(line["probabilities"]) - 1) < 1e-4
    errors = {os.path.basename(line["name"]): line["error"] for line in lines if "error" in line}
    assert "refused before decoding" in errors["bomb.png"] and "10,000,000,000 pixels" in errors["bomb.png"]
    assert errors["empty.png"] == "empty file"
    assert errors["not-an-image.png"].startswith("not an image this model reads")
    assert "truncated" in errors["truncated.png"] and "{{" not in errors["truncated.png"]
    assert (summary.read, summary.predicted, summary.refused) == (16, 12, 4)
    assert summary.rate > 0
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.jsonl"]  # no temporary file left behind


def test_small_batches_stream_in_the_same_order(folder, tmp_path, run_predict):
    run_predict([folder], tmp_path / "a.jsonl")
    run_predict([folder], tmp_path / "b.jsonl", batch_size=3, readers=2)
    whole, small = read_lines(tmp_path / "a.jsonl"), read_lines(tmp_path / "b.jsonl")
    # The same lines in the same order. The probabilities to their last printed digit: oneDNN's kernels depend on
    # the batch's size, so a batch of 3 and one of all the images differ by 1e-6 on an AVX2-only CPU (seen).
    assert [{k: v for k, v in line.items() if k != "probabilities"} for line in small] == \
        [{k: v for k, v in line.items() if k != "probabilities"} for line in whole]
    for a, b in zip(whole, small):
        assert b.get("probabilities") == pytest.approx(a.get("probabilities"), abs=2e-6), a["name"]


def test_files_globs_and_folders_keep_the_order_given(folder, tmp_path, run_predict):
    output = tmp_path / "out.jsonl"
    run_predict([folder / "05.png", f"{folder}/0[0-2].png", folder / "sub", folder / "notes.txt"], output)
    names = [os.path.relpath(line["name"], folder) for line in read_lines(output)]
    assert names[:4] == ["05.png", "00.png", "01.png", "02.png"]
    assert names[4:10] == ["sub/10.png", "sub/11.jpg", "sub/bomb.png", "sub/empty.png", "sub/not-an-image.png",
                           "sub/truncated.png"]
    assert names[10] == "notes.txt"  # named explicitly: tried, and refused on its own line
    assert "not an image" in read_lines(output)[10]["error"]


def test_jsonl_instances_as_vertex_ai_batch_prediction_reads_them(tmp_path, run_predict, expected_classes):
    images, _ = sample_images()
    b64 = [base64.b64encode(encode(image)).decode() for image in images[:3]]
    instances = tmp_path / "instances.jsonl"
    instances.write_text("\n".join([
        json.dumps({"image_bytes": {"b64": b64[0]}}),
        json.dumps({"b64": b64[1], "key": "second"}),
        "",
        json.dumps(images[2].tolist()),
        json.dumps({"images": images[3][..., None].tolist(), "key": 4}),
        "{not json",
        json.dumps({"image_bytes": {"b64": "%%%"}}),
        json.dumps({"images": [[1, 2], [3, 4]]}),
        json.dumps({"something": "else"}),
    ]) + "\n")
    output = tmp_path / "out.jsonl"
    summary = run_predict([instances], output)
    lines = read_lines(output)
    assert [line["name"] for line in lines] == [f"{instances}:1", "second", f"{instances}:4", "4",
                                               f"{instances}:6", f"{instances}:7", f"{instances}:8",
                                               f"{instances}:9"]
    assert [line["class_id"] for line in lines[:4]] == expected_classes(images[:4])
    assert "not a JSON line" in lines[4]["error"]
    assert "base64" in lines[5]["error"]
    assert "28x28" in lines[6]["error"] and "got 2x2" in lines[6]["error"]
    assert "image_bytes" in lines[7]["error"]
    assert (summary.predicted, summary.refused) == (4, 4)


def test_photos_are_converted_like_serving_bytes(tmp_path, signatures, run_predict):
    images, _ = sample_images()
    _, _, serve_bytes = signatures
    photos = [product_photo(image) for image in images[:4]]
    for i, contents in enumerate(photos):
        (tmp_path / f"photo{i}.jpg").write_bytes(contents)
    output = tmp_path / "out.jsonl"
    run_predict([tmp_path / "photo*.jpg"], output)
    got = [line["probabilities"] for line in read_lines(output)]
    expected = serve_bytes(image_bytes=np.array(photos, dtype=object))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_user_mistakes_fail_before_any_output(folder, tmp_path, run_predict):
    from trainer.errors import UserError
    output = tmp_path / "out.jsonl"
    output.write_text("an earlier result\n")
    with pytest.raises(UserError, match="no such file or folder"):
        run_predict([folder, tmp_path / "missing"], output)
    with pytest.raises(UserError, match="matches no file"):
        run_predict([tmp_path / "*.tiff"], output)
    with pytest.raises(UserError, match="holds no SavedModel"):
        batch.predict(str(tmp_path), [str(folder)], str(output), progress=Quiet(), overwrite=True)
    with pytest.raises(UserError, match="is a folder"):
        run_predict([folder], tmp_path)
    with pytest.raises(UserError, match="holds no image"):
        (tmp_path / "empty").mkdir()
        run_predict([tmp_path / "empty"], output, overwrite=True)
    assert output.read_text() == "an earlier result\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out.jsonl"]  # no temporary files


# ------------------------------------------------------------------------------------------ Cloud Storage


def test_cloud_storage_model_inputs_and_output(folder, gcs, tmp_path, exported_model, run_predict):
    from google.cloud import storage
    run = exported_model
    for root, _, files in os.walk(run):
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), run)
            gcs.blob(f"cnn/{relative}").upload_from_filename(os.path.join(root, name))
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            gcs.blob(f"shop/{path.relative_to(folder)}").upload_from_filename(str(path))
    local = tmp_path / "local.jsonl"
    run_predict([folder], local)

    summary = batch.predict("gs://runs/cnn", ["gs://runs/shop"], "gs://runs/predictions/out.jsonl",
                              progress=Quiet())
    remote = [json.loads(line) for line in gcs.blob("predictions/out.jsonl").download_as_text().splitlines()]
    strip = [{k: v for k, v in line.items() if k != "name"} for line in remote]
    assert strip == [{k: v for k, v in line.items() if k != "name"} for line in read_lines(local)]
    assert remote[0]["name"] == "gs://runs/shop/00.png"
    assert (summary.read, summary.predicted) == (16, 12)
    assert not [b.name for b in storage.Client().list_blobs("runs", prefix="predictions/") if "write-test" in b.name]

    batch.predict("gs://runs/cnn/saved_model", ["gs://runs/shop/sub/*.png"], str(tmp_path / "glob.jsonl"),
                    progress=Quiet())
    assert [line["name"] for line in read_lines(tmp_path / "glob.jsonl")] == [
        f"gs://runs/shop/sub/{name}" for name in ("10.png", "bomb.png", "empty.png", "not-an-image.png",
                                                  "truncated.png")]
    # python -m trainer.commands.export, gs:// to gs://: the Vertex AI copy, whose default signature takes image bytes;
    # fmnist-predict then uses its serving_images.
    from trainer.commands import export
    assert export.main(["export", "--model_dir=gs://runs/cnn", "--output_dir=gs://runs/cnn-vertex"]) == 0
    assert gcs.blob("cnn-vertex/saved_model.pb").exists()
    batch.predict("gs://runs/cnn-vertex", [str(folder / "00.png")], str(tmp_path / "v.jsonl"), progress=Quiet())
    assert read_lines(tmp_path / "v.jsonl")[0]["class_id"] == read_lines(local)[0]["class_id"]
    assert export.main(["export", "--model_dir=gs://runs/nothing", "--output_dir=gs://runs/x"]) == 2

    from trainer.errors import UserError
    with pytest.raises(UserError, match="bucket gs://nobucket does not exist"):
        batch.predict("gs://runs/cnn", ["gs://runs/shop"], "gs://nobucket/out.jsonl", progress=Quiet())
    with pytest.raises(UserError, match="no such object or prefix"):
        batch.predict("gs://runs/cnn", ["gs://runs/nothing-here"], str(tmp_path / "x.jsonl"), progress=Quiet())


# ------------------------------------------------------------------------------------------ command line


def test_input_values_split_at_commas_unless_they_name_a_path(tmp_path):
    (tmp_path / "a,b").mkdir()
    assert inputs.input_specs(None) == []
    assert inputs.input_specs(["x.png", "y.png, gs://b/z", str(tmp_path / "a,b")]) == [
        "x.png", "y.png", "gs://b/z", str(tmp_path / "a,b")]


def test_exit_status_follows_the_contract():
    assert predict.outcome(batch.Summary(read=3, predicted=1, refused=2), "o") == (0, None)
    status, message = predict.outcome(batch.Summary(read=2, predicted=0, refused=2), "o.jsonl")
    assert status == 2 and "nothing could be predicted" in message and "o.jsonl" in message
    assert predict.outcome(batch.Summary(read=2, predicted=0, refused=2, transient=2), "o")[0] == 75
    assert predict.outcome(batch.Summary(read=2, predicted=1, refused=1, transient=1), "o")[0] == 75


def test_a_transient_storage_error_is_that_inputs_error_and_makes_the_run_retryable(monkeypatch, tmp_path, run_predict):
    """Cloud Storage unavailable while reading one object: its line says so, the rest are predicted, and the
    exit status asks for a rerun (75); the same while uploading the output is a RetryableError."""
    from google.api_core import exceptions as api
    images, _ = sample_images()

    class Blob:
        def __init__(self, name, contents):
            self.name, self.contents, self.size = name, contents, len(contents) if contents else 10
            self.bucket = type("Bucket", (), {"name": "shop"})()

        def download_as_bytes(self, start=None, end=None):  # the real one's range
            if self.contents is None:
                raise api.ServiceUnavailable("try again")
            return self.contents

    items = [inputs._gcs_item(Blob("a.png", encode(images[0])), 10 ** 6),
             inputs._gcs_item(Blob("b.png", None), 10 ** 6)]
    monkeypatch.setattr(batch, "expand", lambda inputs, max_bytes: iter(items))
    output = tmp_path / "out.jsonl"
    summary = run_predict(["gs://shop/"], output)
    lines = read_lines(output)
    assert lines[0]["name"] == "gs://shop/a.png" and "class_id" in lines[0]
    assert lines[1] == {"name": "gs://shop/b.png", "error": "unreadable (transient: ServiceUnavailable; rerun)"}
    assert predict.outcome(summary, str(output))[0] == 75

    out = Output(str(tmp_path / "x.jsonl"))
    out.file.url, out.file.blob = "gs://shop/x.jsonl", Blob("x.jsonl", b"")
    out.file.blob.upload_from_filename = lambda *a, **k: (_ for _ in ()).throw(api.ServiceUnavailable("later"))
    with pytest.raises(RetryableError, match="uploading --output=gs://shop/x.jsonl failed"):
        out.publish()
    out.discard()


def test_progress_goes_to_stderr_as_lines_or_in_place_on_a_terminal():
    import io
    summary = batch.Summary(read=512, predicted=510, refused=2, seconds=3.0, load_seconds=1.0)
    lines = io.StringIO()
    progress = batch.Progress(lines, every=0.0)
    progress.update(summary)
    assert lines.getvalue() == ("fmnist-predict: 512 read, 510 predicted, 2 refused in 3.0 s (model loaded in 1.0 s, "
                                "then 256 images/s)\n")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    progress = batch.Progress(terminal)
    progress.update(summary, force=True)
    progress.close()
    assert terminal.getvalue().startswith("\rfmnist-predict: 512 read") and terminal.getvalue().endswith("\033[K\n")
