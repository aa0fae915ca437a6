"""The draw-a-digit page in a real browser.

Chromium from the system's package manager (Debian: ``apt-get install chromium``), driven by
Playwright's Python API with ``executable_path`` (Playwright never downloads a browser here), against a
real ``mnist-onnx serve`` process on 127.0.0.1.  Real held-out MNIST digits are drawn on the canvas as
mouse strokes along the digit's skeleton, at a different size and place on the canvas each.

Screenshots (the page after the digits, the phone layout, and any misread digit) are saved under
pytest's temporary folder (``--basetemp`` chooses it); their paths are printed.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HOLDOUT_SAMPLE = REPO / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz"


def _find_chromium() -> str | None:
    """The system's Chromium: $CHROMIUM if set, else the usual executable names on PATH."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _find_chromium()
if CHROMIUM is None:
    pytest.skip(
        f"no Chromium at CHROMIUM={os.environ['CHROMIUM']}"
        if os.environ.get("CHROMIUM")
        else "no Chromium installed (Debian: apt-get install chromium; or set CHROMIUM=/path/to/chrome)",
        allow_module_level=True,
    )
pytest.importorskip("starlette", reason="needs the 'serve' extra: pip install 'mnist-onnx[serve]'")
pytest.importorskip("uvicorn", reason="needs the 'serve' extra: pip install 'mnist-onnx[serve]'")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs Playwright's Python API: pip install 'mnist-onnx[dev]'"
)
from _page_drawing import draw as _draw  # noqa: E402
from _page_drawing import random_placement  # noqa: E402
from PIL import Image  # noqa: E402  (Pillow comes with the serve extra)

# Flags for a headless Chromium that must not reach the network or touch a shared profile.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SERVER_START_TIMEOUT_S = 120
ANSWER_TIMEOUT_MS = 30_000


# -- data ----------------------------------------------------------------------------------------------------------


def _holdout() -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and uint8 images (N, 28, 28) of the bundled held-out sample."""
    with gzip.open(HOLDOUT_SAMPLE, "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",", skiprows=1, dtype=np.int64)
    return rows[:, 0], rows[:, 1:].reshape(-1, 28, 28).astype(np.uint8)


@pytest.fixture(scope="module")
def one_of_each_digit() -> list[tuple[int, np.ndarray]]:
    """The first held-out image of each digit 0-9: ten real digits, every class once."""
    labels, images = _holdout()
    return [(digit, images[int(np.flatnonzero(labels == digit)[0])]) for digit in range(10)]


def _png(image: np.ndarray, *, scale: int = 1, dark_on_light: bool = False) -> bytes:
    """A (28, 28) uint8 digit as PNG bytes, optionally enlarged and as dark ink on white paper."""
    pixels = 255 - image if dark_on_light else image
    picture = Image.fromarray(pixels, mode="L")
    if scale != 1:
        picture = picture.resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


# -- the server ----------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A real ``mnist-onnx serve`` process on 127.0.0.1."""

    def __init__(self, log_dir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log_dir / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "mnist_onnx", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() == 4:  # the CLI's exit code for a missing extra; its message names it
                pytest.skip(f"mnist-onnx serve: {self.log.read_text(errors='replace').strip()[-300:]}")
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mnist-onnx serve exited with {self.process.returncode}: "
                    f"{self.log.read_text(errors='replace')[-2000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + "v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"mnist-onnx serve was not ready within {SERVER_START_TIMEOUT_S} s: "
            f"{self.log.read_text(errors='replace')[-2000:]}"
        )

    def predict(self, body: bytes, content_type: str = "image/png") -> tuple[int, dict]:
        """POST ``body`` to /v1/predict as a script would: (HTTP status, JSON answer)."""
        request = urllib.request.Request(
            self.url + "v1/predict", data=body, method="POST", headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("page-browser")


@pytest.fixture(scope="module")
def server(artifacts: Path) -> Iterator[Server]:
    running = Server(artifacts)
    yield running
    running.stop()


# -- the browser ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # Playwright gives each launch a fresh temporary --user-data-dir, never the user's own profile.
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server: Server) -> Iterator[object]:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url)
    page.wait_for_selector("#chart li")
    yield page
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print a line on the terminal even while pytest captures output (results and artifact paths)."""
    with capsys.disabled():
        print(f"\n{line}")


def _state(page) -> str:
    return page.get_attribute("#app", "data-state")


def _wait_answer(page) -> str:
    """Wait until the page has answered the latest drawing; return its state ('shown' or 'error')."""
    page.wait_for_function(
        "['shown', 'error', 'empty'].includes(document.getElementById('app').dataset.state)", timeout=ANSWER_TIMEOUT_MS
    )
    return _state(page)


def _canvas_ink(page, selector: str = "#pad") -> int:
    """Sum of the red channel over a canvas: 0 for an all-black canvas."""
    return page.evaluate(
        """(selector) => {
        const c = document.querySelector(selector);
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let sum = 0;
        for (let i = 0; i < data.length; i += 4) sum += data[i];
        return sum;
    }""",
        selector,
    )


def _prepared_pixels(page) -> np.ndarray:
    """The 28x28 image the page shows as 'what the model saw'."""
    values = page.evaluate("""() => {
        const c = document.getElementById('prepared');
        const data = c.getContext('2d').getImageData(0, 0, 28, 28).data;
        return Array.from({length: 784}, (_, i) => data[4 * i]);
    }""")
    return np.array(values, dtype=np.uint8).reshape(28, 28)


def _drawing_png(page) -> bytes:
    data_url = page.evaluate("() => document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(data_url.split(",", 1)[1])


def _clear(page) -> None:
    if page.is_enabled("#clear"):  # disabled when there is nothing to clear
        page.click("#clear")
        assert _wait_answer(page) == "empty"


def _without_addresses(text: str) -> str:
    return re.sub(r"0x[0-9a-fA-F]+", "0x?", text)


# -- tests ---------------------------------------------------------------------------------------------------------


def test_drawn_held_out_digits_are_read(page, server: Server, one_of_each_digit, artifacts: Path, capsys) -> None:
    # Each digit drawn at its own size and place, smaller than the canvas and off centre, so that only
    # MNIST's preparation (crop to the ink, fit in 20x20, centre by centre of mass) reads them all;
    # shrinking the whole canvas to 28x28 does not.
    placement = np.random.default_rng(7)
    read = []
    for digit, image in one_of_each_digit:
        _clear(page)
        size, left, top = random_placement(placement)
        assert _draw(page, image, size=size, left=left, top=top) > 0
        assert _wait_answer(page) == "shown", page.inner_text("#message")
        shown = page.inner_text("#digit").strip()
        read.append((digit, shown))
        # The page shows the server's own answer for exactly this drawing: the same label, the same
        # prepared image, and the predicted digit's bar is the highlighted one.
        status, answer = server.predict(_drawing_png(page))
        assert status == 200, answer
        assert shown == str(answer["labels"][0])
        np.testing.assert_array_equal(_prepared_pixels(page), np.array(answer["prepared"][0], dtype=np.uint8))
        assert page.inner_text("#chart li.top .label") == shown
        if shown != str(digit):
            miss = artifacts / f"misread-{digit}-as-{shown}.png"
            page.screenshot(path=str(miss))
            _report(capsys, f"page test: drew {digit}, page read {shown}; screenshot {miss}")
    shot = artifacts / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    correct = sum(str(digit) == shown for digit, shown in read)
    _report(capsys, f"page test: {correct}/10 drawn held-out digits read right {read}; screenshot {shot}")
    assert correct >= 9, f"only {correct}/10 drawn digits read right (drawn, read): {read}"


def test_clear_undo_and_shortcuts_reset_the_page(page, one_of_each_digit) -> None:
    assert page.is_disabled("#clear") and page.is_disabled("#undo")
    digit, image = one_of_each_digit[2]
    strokes = _draw(page, image)
    assert strokes >= 3  # Undo and Ctrl+Z each take one away and leave a drawing
    assert _wait_answer(page) == "shown"
    ink_all = _canvas_ink(page)
    assert ink_all > 0 and page.inner_text("#digit").strip() != "?"

    page.click("#undo")
    assert 0 < _canvas_ink(page) < ink_all
    assert _wait_answer(page) == "shown"
    page.keyboard.press("Control+z")
    assert _wait_answer(page) == "shown"
    assert 0 < _canvas_ink(page) < ink_all

    page.click("#clear")
    assert _wait_answer(page) == "empty"
    assert _canvas_ink(page) == 0
    assert _canvas_ink(page, "#prepared") == 0
    assert page.inner_text("#digit").strip() == "?"
    assert all(text.strip() == "–" for text in page.locator("#chart .pct").all_inner_texts())
    assert page.is_disabled("#clear") and page.is_disabled("#undo")

    _draw(page, image)
    assert _wait_answer(page) == "shown"
    page.keyboard.press("Escape")
    assert _wait_answer(page) == "empty"
    assert _canvas_ink(page) == 0 and page.inner_text("#digit").strip() == "?"


def test_uploaded_and_dropped_images_are_read(page, one_of_each_digit, tmp_path: Path) -> None:
    # A scan-like picture: dark ink on white paper, enlarged 8x; the server's preparation inverts and fits it.
    digit, image = one_of_each_digit[4]
    upload = tmp_path / "four.png"
    upload.write_bytes(_png(image, scale=8, dark_on_light=True))
    page.set_input_files("#file", str(upload))
    assert _wait_answer(page) == "shown", page.inner_text("#message")
    assert page.inner_text("#digit").strip() == str(digit)
    assert _canvas_ink(page) > 0  # the picture is shown on the canvas
    assert _canvas_ink(page, "#prepared") > 0

    digit, image = one_of_each_digit[2]
    data = list(_png(image, scale=4))
    transfer = page.evaluate_handle(
        """(bytes) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], 'two.png', {type: 'image/png'}));
        return transfer;
    }""",
        data,
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    assert _wait_answer(page) == "shown", page.inner_text("#message")
    assert page.inner_text("#digit").strip() == str(digit)


def test_server_refusal_is_shown_as_a_message(page, server: Server, tmp_path: Path, one_of_each_digit) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    status, answer = server.predict(broken.read_bytes())
    assert 400 <= status < 500 and answer.get("error"), (status, answer)

    _draw(page, one_of_each_digit[5][1])
    assert _wait_answer(page) == "shown"
    page.set_input_files("#file", str(broken))
    assert _wait_answer(page) == "error"
    message = page.locator("#message")
    assert message.is_visible()
    assert message.get_attribute("role") == "alert"
    text = message.inner_text()
    # Python's reprs in the reason (e.g. "<_io.BytesIO object at 0x7f...>") differ between requests.
    assert f"HTTP {status}" in text and _without_addresses(answer["error"]) in _without_addresses(text), text
    assert page.inner_text("#digit").strip() == "!"
    # Nothing of an earlier answer stays on screen to be taken for this one's.
    assert all(text.strip() == "–" for text in page.locator("#chart .pct").all_inner_texts())
    assert _canvas_ink(page, "#prepared") == 0

    # The next good answer takes the message away.
    _clear(page)
    _draw(page, one_of_each_digit[5][1])
    assert _wait_answer(page) == "shown"
    assert not page.locator("#message").is_visible()


def test_unreachable_server_is_shown_as_a_message(browser, artifacts: Path, one_of_each_digit) -> None:
    own = Server(artifacts)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        page.goto(own.url)
        page.wait_for_selector("#chart li")
        own.stop()
        _draw(page, one_of_each_digit[1][1])
        assert _wait_answer(page) == "error"
        assert "Cannot reach the server" in page.inner_text("#message")
    finally:
        own.stop()
        page.close()


def test_phone_layout_and_keyboard_order(browser, server: Server, artifacts: Path, one_of_each_digit, capsys) -> None:
    phone = browser.new_page(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    try:
        phone.goto(server.url)
        phone.wait_for_selector("#chart li")
        # Nothing wider than the screen, and the canvas is square and fills most of the width.
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        box = phone.locator("#pad").bounding_box()
        assert abs(box["width"] - box["height"]) < 1 and box["width"] >= 300

        _draw(phone, one_of_each_digit[3][1])
        assert _wait_answer(phone) == "shown"
        shot = artifacts / "page-phone.png"
        phone.screenshot(path=str(shot), full_page=True)
        _report(capsys, f"page test: phone layout screenshot {shot}")

        # Keyboard: Tab reaches Undo, Clear, then the upload control, in that order; the answer is announced.
        phone.focus("body")
        order = []
        for _ in range(3):
            phone.keyboard.press("Tab")
            order.append(phone.evaluate("document.activeElement.id"))
        assert order == ["undo", "clear", "file"]
        assert phone.get_attribute("#summary", "aria-live") == "polite"
        assert phone.locator("label[for=file]").inner_text().strip().startswith("Upload")
    finally:
        phone.close()
