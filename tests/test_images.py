"""Digit images: MNIST's preparation on real pictures, image discovery and the contact sheet."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_onnx.errors import ImageError, MnistOnnxError
from mnist_onnx.runtime import DigitClassifier
from mnist_onnx.runtime.image_files import (
    SheetEntry,
    describe_file,
    expand_image_inputs,
    sniff_image,
    write_contact_sheet,
    write_prepared,
)
from mnist_onnx.runtime.images import load_image, preprocess_digit

IMAGES = Path(__file__).parent / "data" / "images"
GOLDEN = sorted(p for p in IMAGES.iterdir() if p.suffix != ".md")
SAMPLE = Path(__file__).resolve().parents[1] / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz"


@pytest.fixture(scope="module")
def classifier() -> DigitClassifier:
    return DigitClassifier(providers="cpu", threads=1)


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_csv(SAMPLE, nrows=120)
    return frame.filter(like="pixel").to_numpy().reshape(-1, 28, 28).astype(np.uint8), frame["label"].to_numpy()


def _expected(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


# -- golden images ----------------------------------------------------------------


def test_golden_images_are_read_as_their_digits(classifier: DigitClassifier, tmp_path: Path) -> None:
    assert len(GOLDEN) >= 30
    prepared = np.stack([preprocess_digit(path) for path in GOLDEN])
    probabilities = classifier.predict_proba(prepared)
    predicted = probabilities.argmax(axis=1)
    wrong = [i for i, path in enumerate(GOLDEN) if predicted[i] != _expected(path)]
    if wrong:
        # Leave what the model saw where a person can look at it.
        out = tmp_path / "golden-failures"
        out.mkdir()
        for i in wrong:
            write_prepared(out, f"{GOLDEN[i].stem}_read_as_{predicted[i]}", prepared[i])
        write_contact_sheet(
            out / "sheet.png",
            [
                SheetEntry(GOLDEN[i].name, GOLDEN[i], prepared[i], int(predicted[i]), float(probabilities[i].max()))
                for i in wrong
            ],
        )
        names = ", ".join(f"{GOLDEN[i].name} -> {predicted[i]}" for i in wrong)
        pytest.fail(f"{len(wrong)} golden images misread ({names}); prepared images and a contact sheet in {out}")


def test_every_format_and_container_decodes_to_an_mnist_like_digit() -> None:
    for path in GOLDEN:
        out = preprocess_digit(path)
        assert out.shape == (28, 28) and out.dtype == np.uint8, path.name
        # Light digit on black: the border is background, the maximum is full ink.
        assert out[[0, -1], :].max() == 0 and out[:, [0, -1]].max() == 0, path.name
        assert out.max() == 255, path.name


def test_exif_orientation_is_applied() -> None:
    path = IMAGES / "exif_rotated_3.jpg"
    stored = Image.open(path)
    assert stored.getexif().get(0x0112) == 6
    upright = load_image(path)
    assert upright.size == (stored.size[1], stored.size[0])


def test_alpha_only_ink_is_composited_on_white(classifier: DigitClassifier) -> None:
    path = IMAGES / "alpha_ink_5.png"
    assert np.asarray(Image.open(path))[..., :3].max() == 0  # every colour value is black
    assert classifier.predict(preprocess_digit(path)[None])[0] == 5


def test_light_ink_on_transparent_is_read(mnist: tuple[np.ndarray, np.ndarray], classifier: DigitClassifier) -> None:
    # White strokes on a transparent canvas (a drawing app imitating MNIST) vanish on white:
    # they used to be refused as "no digit found".
    images, labels = mnist
    prepared = []
    for image in images[:40]:
        rgba = np.zeros((84, 84, 4), dtype=np.uint8)
        rgba[..., :3] = 255
        rgba[..., 3] = np.asarray(Image.fromarray(image).resize((84, 84), Image.Resampling.BILINEAR))
        prepared.append(preprocess_digit(Image.fromarray(rgba, mode="RGBA")))
    assert (classifier.predict(np.stack(prepared)) == labels[:40]).mean() >= 0.95


def test_dark_ink_on_white_canvas_with_transparent_margins(mnist: tuple[np.ndarray, np.ndarray]) -> None:
    # On black the margins give far more contrast than the ink does: the canvas must still go on white,
    # and be prepared exactly as the same drawing on an opaque white page.
    images, _ = mnist
    for image in images[:10]:
        rgba = np.zeros((200, 200, 4), dtype=np.uint8)
        canvas = 255 - np.asarray(Image.fromarray(image).resize((120, 120), Image.Resampling.BILINEAR))
        rgba[40:160, 40:160, :3] = canvas[..., None]
        rgba[40:160, 40:160, 3] = 255
        page = np.full((200, 200, 3), 255, dtype=np.uint8)  # colour, as the composite is before greyscale
        page[40:160, 40:160] = canvas[..., None]
        assert np.array_equal(preprocess_digit(Image.fromarray(rgba, mode="RGBA")), preprocess_digit(page))


# -- behaviour of preprocess_digit ------------------------------------------------------


def test_mnist_28x28_is_left_alone(mnist: tuple[np.ndarray, np.ndarray]) -> None:
    digit = mnist[0][0]
    assert np.array_equal(preprocess_digit(digit), digit)
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, format="PNG")
    assert np.array_equal(preprocess_digit(buffer.getvalue()), digit)


def test_dark_on_light_28x28_is_inverted_and_prepared(
    mnist: tuple[np.ndarray, np.ndarray], classifier: DigitClassifier
) -> None:
    images, labels = mnist
    prepared = np.stack([preprocess_digit(255 - image) for image in images[:50]])
    assert prepared[:, 0, :].max() == 0
    assert (classifier.predict(prepared) == labels[:50]).mean() >= 0.98


def test_invert_override(mnist: tuple[np.ndarray, np.ndarray]) -> None:
    digit = mnist[0][0]
    forced = preprocess_digit(digit, invert="yes", preprocess=False)
    assert np.array_equal(forced, 255 - digit)
    assert np.array_equal(preprocess_digit(digit, invert=False, preprocess=False), digit)
    with pytest.raises(ImageError, match="invert"):
        preprocess_digit(digit, invert="maybe")  # type: ignore[arg-type]


def test_no_preprocess_is_a_plain_resize() -> None:
    page = np.full((56, 84), 255, dtype=np.uint8)
    page[10:40, 30:36] = 0
    out = preprocess_digit(page, preprocess=False)
    assert out.shape == (28, 28)
    expected = np.asarray(Image.fromarray(255 - page).resize((28, 28), Image.Resampling.BOX))
    assert np.array_equal(out, expected)


def test_centre_of_mass_is_centred_and_box_respected(mnist: tuple[np.ndarray, np.ndarray]) -> None:
    page = np.full((300, 200), 240, dtype=np.uint8)
    digit = np.asarray(Image.fromarray(255 - mnist[0][3]).resize((112, 112), Image.Resampling.BILINEAR))
    page[20:132, 70:182] = np.minimum(digit, 240)
    out = preprocess_digit(page).astype(np.float64)
    rows, cols = np.nonzero(out)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 20
    com = np.array([(np.arange(28)[:, None] * out).sum(), (np.arange(28)[None, :] * out).sum()]) / out.sum()
    assert np.all(np.abs(com - 13.5) <= 1.0)


def test_uneven_lighting_does_not_become_ink(mnist: tuple[np.ndarray, np.ndarray], classifier: DigitClassifier) -> None:
    images, labels = mnist
    height, width = 160, 160
    shade = np.linspace(250, 90, width)[None, :].repeat(height, axis=0)  # a shadow across the page
    correct = 0
    for image, label in zip(images[:20], labels[:20], strict=True):
        ink = np.asarray(Image.fromarray(image).resize((84, 84), Image.Resampling.BILINEAR)) / 255.0
        page = shade.copy()
        page[40:124, 20:104] *= 1 - 0.8 * ink
        correct += int(classifier.predict(preprocess_digit(page.astype(np.uint8))[None])[0] == label)
    assert correct >= 19


def test_array_inputs() -> None:
    digit = np.zeros((40, 40), dtype=np.int64)
    digit[5:35, 18:23] = 255
    reference = preprocess_digit(digit.astype(np.uint8))
    assert np.array_equal(preprocess_digit(digit), reference)
    assert np.array_equal(preprocess_digit(digit / 255.0), reference)
    assert np.array_equal(preprocess_digit(digit.astype(bool)), reference)
    rgb = np.repeat(digit.astype(np.uint8)[..., None], 3, axis=2)
    assert np.array_equal(preprocess_digit(rgb), reference)
    assert np.array_equal(preprocess_digit(Image.fromarray(rgb)), reference)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.full((30, 30), 300), "0-255"),
        (np.full((30, 30), -1.0), r"\[0, 1\]"),
        (np.full((30, 30), np.nan), "finite"),
        (np.zeros((3, 30, 30)), "shaped"),
        (np.zeros((30, 30), dtype=np.complex64), "dtype"),
        ("no-such-file.png", "no such file"),
        (b"not an image", "not an image"),
        (12, "expected a path"),
    ],
)
def test_bad_inputs_are_refused_with_one_line(value: object, message: str) -> None:
    with pytest.raises(ImageError, match=message) as info:
        preprocess_digit(value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, MnistOnnxError) and isinstance(info.value, ValueError)


def test_blank_page_is_refused() -> None:
    with pytest.raises(ImageError, match="no digit"):
        preprocess_digit(np.full((50, 60), 230, dtype=np.uint8))


@pytest.mark.parametrize("preprocess", [True, False])
@pytest.mark.parametrize("level", [0, 255, 90])
def test_uniform_image_is_refused_not_predicted(preprocess: bool, level: int) -> None:
    # A blank 28x28 canvas (all black, all white, all grey) is no digit, prepared or not:
    # it used to be passed through as it was and read as some digit.
    with pytest.raises(ImageError, match="no digit"):
        preprocess_digit(np.full((28, 28), level, dtype=np.uint8), preprocess=preprocess)


@pytest.mark.parametrize("preprocess", [True, False])
def test_faint_28x28_digits_are_brought_to_full_ink(
    mnist: tuple[np.ndarray, np.ndarray], classifier: DigitClassifier, preprocess: bool
) -> None:
    # A 0/1 mask (``(img > t).astype(np.uint8)``) and a faint scan are light on black but
    # far from MNIST's full ink (every bundled held-out digit peaks at 254 or 255).
    images, labels = mnist
    for faint in ((images > 100).astype(np.uint8), (images * 0.2).astype(np.uint8)):
        prepared = np.stack([preprocess_digit(image, preprocess=preprocess) for image in faint])
        assert prepared.reshape(len(prepared), -1).max(axis=1).min() == 255
        assert (classifier.predict(prepared) == labels).mean() >= 0.95


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    # A 1-bit 12,000 x 12,000 PNG: 144 megapixels in a file of a few kilobytes.
    path = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(path)
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageError, match="limit"):
        preprocess_digit(path)
    with pytest.raises(ImageError, match="limit"):
        preprocess_digit(np.zeros((100, 100), dtype=np.uint8), max_pixels=5_000)


# -- properties: where and how large a digit is drawn, and its polarity, do not change its label ----


# Derandomized: the same 25 cases on every run, so CI does not fail by chance.  A known counterexample outside
# them: sample row 83 (a thick 0) enlarged 1.5x in the top-left corner of an 84x101 canvas loses its ring to
# the stroke thinning and reads 8 (p 0.46) -- a limit of the preparation, written down in docs/images.md.
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    index=st.integers(0, 119),
    scale=st.floats(1.0, 6.0),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
    extra=st.floats(1.1, 2.5),
    dark_on_light=st.booleans(),
)
def test_translation_scaling_and_inversion_keep_the_label(
    classifier: DigitClassifier,
    mnist: tuple[np.ndarray, np.ndarray],
    index: int,
    scale: float,
    fx: float,
    fy: float,
    extra: float,
    dark_on_light: bool,
) -> None:
    images, _ = mnist
    digit = images[index]
    original = int(classifier.predict(digit[None])[0])
    side = max(28, round(28 * scale))
    enlarged = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR))
    canvas_h, canvas_w = round(side * extra), round(side * extra * 1.2)
    top, left = round(fy * (canvas_h - side)), round(fx * (canvas_w - side))
    page = np.zeros((canvas_h, canvas_w), dtype=np.uint8)
    page[top : top + side, left : left + side] = enlarged
    if dark_on_light:
        page = 255 - page
    assert classifier.predict(preprocess_digit(page)[None])[0] == original


# -- discovery, sniffing, contact sheet ---------------------------------------------------------


def test_sniff_and_describe(tmp_path: Path) -> None:
    assert sniff_image((IMAGES / "png_named_jpg_5.jpg").read_bytes()[:16]) == "PNG"
    assert sniff_image((IMAGES / "format_1.tif").read_bytes()[:16]) == "TIFF"
    assert sniff_image((IMAGES / "format_8.webp").read_bytes()[:16]) == "WebP"
    assert sniff_image((IMAGES / "format_9.gif").read_bytes()[:16]) == "GIF"
    assert sniff_image((IMAGES / "format_4.bmp").read_bytes()[:16]) == "BMP"
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.7\n")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").write_bytes(b"")
    assert describe_file(tmp_path / "doc.pdf") == "a PDF document"
    assert describe_file(tmp_path / "notes.txt") == "text"
    assert describe_file(tmp_path / "empty") == "an empty file"
    assert describe_file(IMAGES / "uci_0051_0.jpg") == "a JPEG image"


def test_expand_inputs_folders_globs_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deep").mkdir()
    (tmp_path / "a.csv").write_text("pixel0\n0\n")
    for name in ("z.png", "a.png", "m.dat"):
        (tmp_path / "b" / name).write_bytes((IMAGES / "mnist_0000_3.png").read_bytes())
    (tmp_path / "b" / "readme.png").write_text("not an image")
    (tmp_path / "b" / "deep" / "c.png").write_bytes((IMAGES / "mnist_0000_3.png").read_bytes())
    folder = str(tmp_path / "b")
    assert expand_image_inputs([folder]) == [f"{folder}/a.png", f"{folder}/m.dat", f"{folder}/z.png"]
    assert expand_image_inputs([folder], recursive=True) == [
        f"{folder}/a.png",
        f"{folder}/deep/c.png",
        f"{folder}/m.dat",
        f"{folder}/z.png",
    ]
    mixed = expand_image_inputs([str(tmp_path / "a.csv"), f"{folder}/*.png", str(IMAGES / "mnist_0001_0.png")])
    assert mixed == [
        str(tmp_path / "a.csv"),
        f"{folder}/a.png",
        f"{folder}/readme.png",
        f"{folder}/z.png",
        str(IMAGES / "mnist_0001_0.png"),
    ]
    assert expand_image_inputs([f"{tmp_path}/**/c.png"], recursive=True) == [f"{folder}/deep/c.png"]
    with pytest.raises(ImageError, match="matches no file"):
        expand_image_inputs([f"{tmp_path}/*.jpeg"])
    with pytest.raises(ImageError, match="no such file"):
        expand_image_inputs([str(tmp_path / "missing.png")])
    with pytest.raises(ImageError, match="--recursive"):
        expand_image_inputs([str(_empty_with_subfolder(tmp_path))])


def _empty_with_subfolder(tmp_path: Path) -> Path:
    top = tmp_path / "top"
    (top / "inner").mkdir(parents=True)
    (top / "inner" / "x.png").write_bytes((IMAGES / "mnist_0000_3.png").read_bytes())
    return top


def test_contact_sheet_shows_every_input(tmp_path: Path, classifier: DigitClassifier) -> None:
    paths = GOLDEN[:7]
    prepared = np.stack([preprocess_digit(p) for p in paths])
    probabilities = classifier.predict_proba(prepared)
    entries = [
        SheetEntry(p.name, p, prepared[i], int(probabilities[i].argmax()), float(probabilities[i].max()))
        for i, p in enumerate(paths)
    ]
    out = write_contact_sheet(tmp_path / "sheet.png", entries, columns=3)
    sheet = Image.open(out)
    assert sheet.format == "PNG"
    assert sheet.size[0] == 3 * (2 * 96 + 12) and sheet.size[1] == 3 * (96 + 30 + 8)
    # The prepared image of the first tile is drawn 3x, pixel for pixel.
    first = np.asarray(sheet.convert("L"))[4 + 6 : 4 + 90, 4 + 96 + 4 + 6 : 4 + 96 + 4 + 90]
    assert np.array_equal(first[::3, ::3], prepared[0])
    with pytest.raises(ImageError):
        write_contact_sheet(tmp_path / "none.png", [])
    assert not (tmp_path / "none.png").exists()


# -- predicting images ----------------------------------------------------------------------------


def test_prepare_images_single_and_many(mnist: tuple[np.ndarray, np.ndarray]) -> None:
    from mnist_onnx.runtime.image_predict import prepare_images

    one = prepare_images(GOLDEN[0])
    assert one.names == (str(GOLDEN[0]),) and one.pixels.shape == (1, 28, 28)
    many = prepare_images([GOLDEN[1], mnist[0][0], GOLDEN[2].read_bytes()])
    assert many.names == (str(GOLDEN[1]), "image1", "image2") and many.pixels.shape == (3, 28, 28)
    batch = prepare_images(mnist[0][:4])
    assert batch.pixels.shape == (4, 28, 28) and np.array_equal(batch.pixels, mnist[0][:4])
    colour = prepare_images(
        np.zeros((40, 40, 3), dtype=np.uint8)
        + 255
        - np.pad(np.full((20, 6, 3), 255, dtype=np.uint8), ((10, 10), (17, 17), (0, 0)))
    )
    assert colour.pixels.shape == (1, 28, 28)
    with pytest.raises(ImageError, match="at least one"):
        prepare_images([])


def test_image_outputs_in_input_order(tmp_path: Path, classifier: DigitClassifier) -> None:
    from mnist_onnx.runtime.image_predict import image_frame, prepare_images, write_image_outputs

    paths = [GOLDEN[5], GOLDEN[0], GOLDEN[5]]
    prepared = prepare_images(paths)
    probabilities = classifier.predict_proba(prepared.pixels)
    labels = probabilities.argmax(axis=1)
    frame = image_frame(prepared, probabilities, labels, proba=True)
    assert list(frame.columns) == ["path", "Label"] + [f"p{i}" for i in range(10)] + ["confidence"]
    assert frame["path"].tolist() == [str(p) for p in paths]
    assert frame["Label"].tolist() == [_expected(p) for p in paths]
    written = write_image_outputs(
        prepared, probabilities, labels, save_prepared=tmp_path / "prep", report=tmp_path / "report"
    )
    assert [p.name for p in written[:3]] == [f"{i}_{p.stem}.png" for i, p in enumerate(paths)]
    assert np.array_equal(np.asarray(Image.open(written[1])), prepared.pixels[1])
    assert written[-1] == tmp_path / "report" / "contact_sheet.png" and written[-1].exists()


def test_sort_inputs_and_files_that_are_neither(tmp_path: Path) -> None:
    from mnist_onnx.runtime.image_cli import sort_inputs

    csv = tmp_path / "test.csv"
    csv.write_text("pixel0\n0\n")
    csvs, images = sort_inputs([str(csv), str(IMAGES / "png_named_jpg_5.jpg"), str(IMAGES / "format_9.gif")])
    assert csvs == [str(csv)] and images == [str(IMAGES / "png_named_jpg_5.jpg"), str(IMAGES / "format_9.gif")]
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(b"%PDF-1.4\n\xff\xfe binary")
    with pytest.raises(MnistOnnxError, match=r"scan.pdf: is a PDF document; expected a Kaggle CSV .*PNG, JPEG"):
        sort_inputs([str(pdf)])


def _png_broken_after_its_header() -> bytes:
    """A 32x32 grey PNG whose image data's second chunk has a garbled type (Pillow raises SyntaxError decoding it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packed = zlib.compress(b"".join(b"\x00" + bytes(range(0, 160, 5)) for _ in range(32)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", packed[: len(packed) // 2])
        + chunk(b"G\xd2\xb0\x1d", packed[len(packed) // 2 :])
        + chunk(b"IEND", b"")
    )


def test_a_png_broken_after_its_header_is_an_image_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(_png_broken_after_its_header())
    with pytest.raises(ImageError, match="broken.png: cannot decode the image"):
        preprocess_digit(path)


def test_an_image_over_max_pixels_is_refused_before_it_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (200, 200)).save(path)

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("decoded an image over the pixel limit")

    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match="more than the limit of 10,000"):
        preprocess_digit(path, max_pixels=10_000)


def test_an_image_over_pillows_own_limit_names_both_limits(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow refuses over twice this: 2,000 pixels
    buffer = io.BytesIO()
    Image.new("L", (100, 100)).save(buffer, format="PNG")
    with pytest.raises(ImageError) as refused:
        load_image(buffer.getvalue())
    message = str(refused.value)
    assert "over Pillow's limit of 2,000 pixels" in message and "the limit here is 64,000,000" in message
    assert "\n" not in message and "DOS" not in message
