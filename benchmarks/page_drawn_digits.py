"""How well the draw-a-digit page reads held-out MNIST digits drawn on it with the mouse.

Usage (needs the 'serve' extra, Playwright's Python API and a system Chromium; start the server first)::

    mnist-onnx serve --port 8000 &
    python benchmarks/page_drawn_digits.py http://127.0.0.1:8000/ --per-digit 5

Draws the first ``--per-digit`` images of each digit 0-9 from the bundled held-out sample on the page's
canvas, along their skeletons, each at a random size (55-80% of the canvas) and place (``--seed``), the
way tests/test_page_browser.py does, and counts the digits the page reads right.  In the same run, the
same drawings (the canvas's own PNG) are also read the way many demos do it, the whole canvas shrunk to
28x28 without cropping or centring, by the bundled model in-process: the contender that shows what
MNIST's preparation is worth.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _page_drawing import draw, random_placement  # noqa: E402

SAMPLE = REPO / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _whole_canvas_28(png: bytes) -> np.ndarray:
    """The naive preparation: the canvas (white ink on black) resized to 28x28 as it is."""
    from PIL import Image

    picture = Image.open(io.BytesIO(png)).convert("L").resize((28, 28), Image.Resampling.BOX)
    return np.asarray(picture, dtype=np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the page, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--per-digit", type=int, default=5, help="images of each digit to draw (default: 5)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sizes and places (default: 7)")
    parser.add_argument(
        "--chromium",
        default=shutil.which("chromium") or shutil.which("chromium-browser"),
        help="Chromium executable (default: chromium on PATH)",
    )
    args = parser.parse_args()
    if not args.chromium:
        parser.error("no Chromium found: install it (Debian: apt-get install chromium) or pass --chromium PATH")

    from playwright.sync_api import sync_playwright

    from mnist_onnx import DigitClassifier

    with gzip.open(SAMPLE, "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",", skiprows=1, dtype=np.int64)
    labels, images = rows[:, 0], rows[:, 1:].reshape(-1, 28, 28).astype(np.uint8)
    picks = [(digit, images[i]) for digit in range(10) for i in np.flatnonzero(labels == digit)[: args.per_digit]]
    rng = np.random.default_rng(args.seed)
    classifier = DigitClassifier(providers="cpu")

    page_right, naive_right, misses = 0, 0, []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(args.url)
        page.wait_for_selector("#chart li")
        for digit, image in picks:
            if page.is_enabled("#clear"):
                page.click("#clear")
            size, left, top = random_placement(rng)
            draw(page, image, size=size, left=left, top=top)
            page.wait_for_function("['shown', 'error'].includes(document.getElementById('app').dataset.state)")
            shown = page.inner_text("#digit").strip()
            page_right += shown == str(digit)
            if shown != str(digit):
                misses.append((digit, shown))
            data_url = page.evaluate("() => document.getElementById('pad').toDataURL('image/png')")
            naive = classifier.predict(_whole_canvas_28(base64.b64decode(data_url.split(",", 1)[1]))[None])[0]
            naive_right += int(naive) == digit
        browser.close()

    total = len(picks)
    print(f"{total} held-out digits drawn on {args.url} (first {args.per_digit} of each digit, seed {args.seed})")
    print(f"  the page (the server's preparation): {page_right}/{total} = {page_right / total:.0%} right")
    print(f"  whole canvas shrunk to 28x28:        {naive_right}/{total} = {naive_right / total:.0%} right")
    print(f"  the page's misses (drawn, read): {misses}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
