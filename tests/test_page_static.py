"""The draw-a-digit page's files, without a browser: self-contained (works offline) and served as shipped.

tests/test_page_browser.py drives the page in Chromium; these checks run wherever the serve extra is installed.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[1] / "mnist_onnx" / "serve" / "static"


class _References(HTMLParser):
    """Every src/href in a page, and the ids it declares."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)
            if name == "id" and value:
                self.ids.add(value)


def _page() -> _References:
    parser = _References()
    parser.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    return parser


def test_the_page_loads_nothing_from_outside_the_server() -> None:
    urls = _page().urls
    assert urls, "index.html references no files"
    for url in urls:
        if url.startswith("data:"):
            continue  # inline (the favicon)
        # Relative: the page also works behind a proxy that mounts the server under a path prefix.
        assert not re.match(r"^([a-z][a-z0-9+.-]*:|/)", url, re.IGNORECASE), f"index.html: {url!r} is not relative"
        assert (STATIC.parent / url).is_file(), f"index.html references {url!r}, which is not in the package"
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    assert "@import" not in css and "@font-face" not in css
    assert not re.search(r"url\(\s*['\"]?(?!data:)", css), "style.css loads a file"
    js = (STATIC / "app.js").read_text(encoding="utf-8")
    assert not re.search(r"https?://|\bimport\s*\(|importScripts|new\s+WebSocket", js), "app.js reaches out"
    assert re.search(r"""PREDICT_URL\s*=\s*["']v1/predict["']""", js), "app.js must call the relative v1/predict"


def test_every_element_the_script_uses_is_on_the_page() -> None:
    js = (STATIC / "app.js").read_text(encoding="utf-8")
    used = set(re.findall(r"""\$\(["']([\w-]+)["']\)""", js))
    assert used, "app.js looks up no elements"
    missing = used - _page().ids
    assert not missing, f"app.js uses ids that index.html lacks: {sorted(missing)}"


def test_the_server_serves_the_page_as_shipped() -> None:
    pytest.importorskip("starlette", reason="needs the 'serve' extra: pip install 'mnist-onnx[serve]'")
    from starlette.testclient import TestClient

    from mnist_onnx.serve.app import create_app
    from mnist_onnx.serve.config import ServeConfig

    types = {".html": "text/html", ".js": "javascript", ".css": "text/css"}
    with TestClient(create_app(ServeConfig(precision="int8"))) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.content == (STATIC / "index.html").read_bytes()
        for url in _page().urls:
            if url.startswith("data:"):
                continue
            response = client.get("/" + url)
            assert response.status_code == 200, url
            assert response.content == (STATIC.parent / url).read_bytes()
            assert types[Path(url).suffix] in response.headers["content-type"], (url, response.headers)
