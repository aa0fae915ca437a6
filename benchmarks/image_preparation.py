"""Accuracy of the bundled model on real digit pictures, with and without MNIST's preparation.

Two real data sets, rendered the way users' pictures look (dark ink on light
paper, off-centre, larger than 28x28, uneven lighting, sensor noise, a third as
colour JPEG):

(a) Real handwriting from outside MNIST: the UCI "Optical Recognition of
    Handwritten Digits" test set (43 writers' forms, NIST preprocessing
    programs; E. Alpaydin and C. Kaynak, 1998), as shipped inside scikit-learn
    (``sklearn.datasets.load_digits``: 1,797 digits, 8x8 counts 0-16 of 4x4
    blocks of the 32x32 bitmaps).  The 8x8 grid is enlarged smoothly (bicubic)
    to the rendered size.  A fixed random half ("tune") was used to choose the
    preparation's settings; the other half ("report") is reported.
(b) Held-out MNIST digits (the bundled labelled sample, 1,000 digits), once as
    plain 28x28 PNGs and once as inverted, enlarged, off-centre scans.

Each picture is encoded (PNG or JPEG) and decoded through
``mnist_onnx.runtime.images.preprocess_digit``, exactly as a user's file would be.
"plain resize" is what most demos do: greyscale, invert if the background is
light, resize the whole picture to 28x28.

Usage:
    python benchmarks/image_preparation.py [--model MODEL.onnx] [--write DIR] [--per-set N]

``--write DIR`` also saves every rendered picture (``DIR/<set>/<index>_<label>.png|jpg``).
Needs scikit-learn (the ``dev`` extra) for data set (a).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mnist_onnx.runtime import DigitClassifier
from mnist_onnx.runtime.images import preprocess_digit
from mnist_onnx.runtime.model_source import bundled_sample_path


def render_scan(digit: np.ndarray, rng: np.random.Generator, *, smooth: bool) -> tuple[bytes, str]:
    """Render a light-on-dark digit (float 0-1) as a photo/scan of dark ink on paper.

    Returns the encoded file's bytes and its extension (``png`` or ``jpg``).
    """
    height = int(rng.integers(40, 160))
    width = max(8, int(round(height * digit.shape[1] / digit.shape[0])))
    resample = Image.Resampling.BICUBIC if smooth else Image.Resampling.BILINEAR
    ink = (
        np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((width, height), resample), dtype=np.float32)
        / 255.0
    )
    ink = np.clip(ink, 0, 1)
    canvas_h = int(height * rng.uniform(1.3, 2.6))
    canvas_w = int(max(width, height) * rng.uniform(1.3, 2.6))
    top = int(rng.integers(0, canvas_h - height + 1))
    left = int(rng.integers(0, canvas_w - width + 1))
    paper = rng.uniform(170, 250)
    ink_level = rng.uniform(10, 90)
    # Lighting falls off across the page (a phone held at an angle).
    yy, xx = np.mgrid[0:canvas_h, 0:canvas_w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx / canvas_w + np.sin(angle) * yy / canvas_h
    light = 1.0 - rng.uniform(0.0, 0.35) * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    coverage = np.zeros((canvas_h, canvas_w), dtype=np.float32)
    coverage[top : top + height, left : left + width] = ink
    grey = (paper * (1 - coverage) + ink_level * coverage) * light
    grey = grey + rng.normal(0, rng.uniform(1, 8), grey.shape)
    if rng.random() < 1 / 3:
        tint_paper = np.array([1.0, rng.uniform(0.93, 1.0), rng.uniform(0.82, 0.97)])  # cream paper
        tint_ink = np.array([rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5), rng.uniform(0.6, 1.0)])  # blue ink
        mix = coverage[..., None]
        rgb = (
            grey[..., None] * ((1 - mix) * tint_paper + mix * tint_ink) / np.maximum((1 - mix) * 1.0 + mix * 1.0, 1e-6)
        )
        picture = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=int(rng.integers(60, 92)))
        return buffer.getvalue(), "jpg"
    picture = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue(), "png"


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def score(clf: DigitClassifier, files: list[bytes], labels: np.ndarray) -> dict[str, float]:
    prepared = np.stack([preprocess_digit(f) for f in files])
    plain = np.stack([preprocess_digit(f, preprocess=False) for f in files])
    return {
        "MNIST preparation": float((clf.predict(prepared) == labels).mean()),
        "plain resize": float((clf.predict(plain) == labels).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="also save the rendered pictures under this folder")
    parser.add_argument("--per-set", type=int, default=None, help="use only the first N digits of each set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="an ONNX digit classifier (default: the bundled fp32 model)")
    args = parser.parse_args(argv)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("this benchmark needs scikit-learn: pip install 'mnist-onnx[dev]'", file=sys.stderr)
        return 4
    rng = np.random.default_rng(args.seed)
    clf = DigitClassifier(args.model, providers="cpu")

    digits = load_digits()
    order = np.random.default_rng(12345).permutation(len(digits.target))
    halves = {"uci-tune": order[: len(order) // 2], "uci-report": order[len(order) // 2 :]}
    sample = pd.read_csv(bundled_sample_path())
    mnist = sample.filter(like="pixel").to_numpy().reshape(-1, 28, 28).astype(np.uint8)
    mnist_labels = sample["label"].to_numpy()

    sets: dict[str, tuple[list[tuple[bytes, str]], np.ndarray]] = {}
    for name, rows in halves.items():
        rows = rows[: args.per_set] if args.per_set else rows
        files = [render_scan(digits.images[i] / 16.0, rng, smooth=True) for i in rows]
        sets[name] = (files, digits.target[rows])
    count = args.per_set or len(mnist_labels)
    sets["mnist-png"] = ([(png_bytes(m), "png") for m in mnist[:count]], mnist_labels[:count])
    sets["mnist-scan"] = ([render_scan(m / 255.0, rng, smooth=False) for m in mnist[:count]], mnist_labels[:count])

    print(f"{'set':<12} {'n':>5} {'MNIST preparation':>18} {'plain resize':>13}")
    for name, (files, labels) in sets.items():
        result = score(clf, [f for f, _ in files], labels)
        print(f"{name:<12} {len(labels):>5} {result['MNIST preparation']:>17.1%} {result['plain resize']:>13.1%}")
        if args.write:
            folder = args.write / name
            folder.mkdir(parents=True, exist_ok=True)
            for index, ((data, ext), label) in enumerate(zip(files, labels, strict=True)):
                (folder / f"{index:04d}_{label}.{ext}").write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
