"""Fashion-MNIST test images rendered as product photos, and the models' accuracy on them against the originals.

Each of the first N test images (default 1,000) becomes a "product photo" as Zalando's were before Fashion-MNIST's
conversion: dark garment on white (negated), upscaled 4-10x (bicubic), RGB, placed off-centre on a larger white
canvas of another aspect ratio, JPEG-compressed (quality 70-95). Every random choice comes from --seed.

The photos are then classified through the SavedModel's `serving_bytes` signature (JPEG bytes in: decoding, the
photo rule and conversion of trainer/serving/photo.py inside the graph) and the originals through `serving_default`;
both are compared with the labels. Variants of the conversion (the paper's subsampling instead of area
resizing, sharpening off) are scored on the same photos through trainer.serving.photo directly.

    .venv/bin/python bench/photos.py --models=out/photos/cnn,out/photos/vgg --grid=out/photos/grid.png
"""

import argparse
import io
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import trainer  # noqa: E402,F401  (tf-keras before TensorFlow)


def render(image, rng):
    """uint8 [28, 28] Fashion-MNIST image -> JPEG bytes of a product photo (see the module docstring)."""
    from PIL import Image
    factor = rng.uniform(4.0, 10.0)
    side = int(round(28 * factor))
    garment = Image.fromarray(255 - image).resize((side, side), Image.BICUBIC)
    # Another aspect: each side of the canvas 1.2-2.2x the garment's, drawn independently.
    width, height = int(side * rng.uniform(1.2, 2.2)), int(side * rng.uniform(1.2, 2.2))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    canvas.paste(garment.convert("RGB"), (left, top))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=int(rng.integers(70, 96)))
    return buffer.getvalue()


def load_test_images(count, data_dir, manual_dir):
    from trainer.training import data
    builder = data.prepare(data_dir, manual_dir)
    images, labels = data.load(builder, f"test[:{count}]")
    return images[..., 0], labels


def convert_all(photos, **variant):
    import tensorflow as tf
    from trainer.serving import photo
    convert = tf.function(lambda c: photo.to_fashion_mnist(photo.decode(c), **variant))
    return np.stack([convert(tf.constant(p)).numpy() for p in photos])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="out/photos/cnn,out/photos/vgg",
                        help="comma-separated run folders (or their saved_model/)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=".data/tfds")
    parser.add_argument("--tfds_manual_dir", default="/work/shared/datasets/fashion-mnist")
    parser.add_argument("--grid", default="", help="write an example grid (PNG) here")
    parser.add_argument("--variants", action="store_true", help="also score the conversion's variants")
    parser.add_argument("--write", default="",
                        help="also write the originals (PNG) and the photos (JPEG) into this folder: "
                             "originals/NNNN-CLASS.png, photos/NNNN-CLASS.jpg (for trainer.commands.predict)")
    args = parser.parse_args()

    import tensorflow as tf
    images, labels = load_test_images(args.count, args.data_dir, args.tfds_manual_dir)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    photos = [render(image, rng) for image in images]
    print(f"rendered {len(photos)} photos in {time.perf_counter() - started:.1f} s "
          f"(mean {np.mean([len(p) for p in photos]) / 1024:.1f} KiB JPEG)")
    if args.write:
        from PIL import Image
        from trainer.training import data
        for kind in ("originals", "photos"):
            os.makedirs(os.path.join(args.write, kind), exist_ok=True)
        for i, (image, contents, label) in enumerate(zip(images, photos, labels)):
            stem = f"{i:05d}-{data.CLASS_NAMES[label].replace('/', '-').replace(' ', '-')}"
            Image.fromarray(image).save(os.path.join(args.write, "originals", f"{stem}.png"))
            with open(os.path.join(args.write, "photos", f"{stem}.jpg"), "wb") as f:
                f.write(contents)
        print(f"wrote {len(photos)} originals and photos into {args.write}")
    variants = {"default (area resize, sharpen)": {}}
    if args.variants:
        variants.update({"paper: subsample (nearest), sharpen": {"resize_method": "nearest"},
                         "area resize, no sharpening": {"sharpen": 0.0},
                         "bilinear (antialiased), sharpen": {"resize_method": "bilinear"}})
    converted = {name: convert_all(photos, **v) for name, v in variants.items()}
    default = converted["default (area resize, sharpen)"]
    difference = np.abs(default.astype(int) - images).mean()
    print(f"converted back: mean absolute difference from the originals {difference:.1f} grey levels of 255")

    rows = []
    for model_dir in [m for m in args.models.split(",") if m]:
        path = os.path.join(model_dir, "saved_model") if os.path.isdir(os.path.join(model_dir, "saved_model")) \
            else model_dir
        loaded = tf.saved_model.load(path)
        serve, serve_bytes = loaded.signatures["serving_default"], loaded.signatures["serving_bytes"]
        original = np.concatenate([serve(images=tf.constant(images[i:i + 250]))["class_id"].numpy()
                                   for i in range(0, len(images), 250)])
        started = time.perf_counter()
        through_bytes = np.concatenate([serve_bytes(image_bytes=tf.constant(photos[i:i + 250]))["class_id"].numpy()
                                        for i in range(0, len(photos), 250)])
        seconds = time.perf_counter() - started
        acc_original, acc_photos = np.mean(original == labels), np.mean(through_bytes == labels)
        row = {"model": os.path.basename(os.path.normpath(model_dir)), "originals": acc_original,
               "photos (serving_bytes)": acc_photos, "points": 100 * (acc_photos - acc_original),
               "agree": np.mean(original == through_bytes), "photos/s": len(photos) / seconds}
        for name, arrays in converted.items():
            predicted = np.concatenate([serve(images=tf.constant(arrays[i:i + 250]))["class_id"].numpy()
                                        for i in range(0, len(arrays), 250)])
            row[name] = np.mean(predicted == labels)
        rows.append(row)

    print(f"\n{len(photos)} test images (the first of the test split), seed {args.seed}; "
          f"{platform.node()}, TensorFlow {tf.__version__}")
    print("| model | originals | rendered photos, converted | difference (points) | same prediction | photos/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['originals']:.3f} | {r['photos (serving_bytes)']:.3f} | {r['points']:+.1f} | "
              f"{r['agree']:.3f} | {r['photos/s']:.0f} |")
    if args.variants:
        print("\nthe conversion's variants (accuracy on the same photos):")
        print("| variant | " + " | ".join(r["model"] for r in rows) + " |")
        print("| --- | " + " | ".join("---" for _ in rows) + " |")
        for name in variants:
            print(f"| {name} | " + " | ".join(f"{r[name]:.3f}" for r in rows) + " |")

    if args.grid:
        write_grid(args.grid, images[:8], photos[:8], default[:8])
        print(f"\nexample grid: {args.grid}")


def write_grid(path, originals, photos, converted):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    columns = len(originals)
    figure, axes = plt.subplots(3, columns, figsize=(1.6 * columns, 5.2))
    for i in range(columns):
        axes[0, i].imshow(originals[i], cmap="gray", vmin=0, vmax=255)
        axes[1, i].imshow(np.asarray(Image.open(io.BytesIO(photos[i]))))
        axes[2, i].imshow(converted[i], cmap="gray", vmin=0, vmax=255)
        for row in range(3):
            axes[row, i].set_xticks([])
            axes[row, i].set_yticks([])
    for row, title in enumerate(("original", "rendered photo", "converted back")):
        axes[row, 0].set_ylabel(title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
