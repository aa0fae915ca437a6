"""Turn a picture of one handwritten digit into a 28x28 MNIST-style image.

The model behind this package was trained on MNIST, so a user's digit is scored
well only once it looks like an MNIST digit.  MNIST's own construction is
published on its home page (Y. LeCun, C. Cortes and C. J. C. Burges, "The MNIST
database of handwritten digits", yann.lecun.com/exdb/mnist): the NIST
black-and-white digits "were size normalized to fit in a 20x20 pixel box while
preserving their aspect ratio", the result contains grey levels "as a result of
the anti-aliasing technique used by the normalization algorithm", and the
images "were centered in a 28x28 image by computing the center of mass of the
pixels, and translating the image so as to position this point at the center
of the 28x28 field".  Digits are light on black (0 is background).

:func:`preprocess_digit` applies that construction, preceded by the steps that a
scan, a phone photo or a paint-program drawing needs before it is comparable
with NIST's clean bilevel scans; each step below says why.

Only numpy and Pillow are used (the runtime's dependencies).
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any, Literal, cast

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageError

__all__ = ["preprocess_digit", "load_image", "MAX_IMAGE_PIXELS", "InvertMode"]

InvertMode = Literal["auto", "yes", "no"]

#: Largest image accepted, in pixels (width x height).  A 50-megapixel phone photo
#: fits; a decompression bomb (a small file that expands to gigabytes) does not.
#: Pillow's own guard only warns at 89 MP and refuses at 179 MP.
MAX_IMAGE_PIXELS = 64_000_000

#: MNIST's geometry (MNIST home page): a 20x20 box centred in a 28x28 field.
MNIST_SIDE = 28
MNIST_BOX = 20

# Working resolution: the digit ends up 20 pixels tall, so nothing is gained by
# processing a 12-megapixel photo at full size; reducing first bounds the cost.
_WORKING_SIDE = 400
# Stroke width range, in pixels of the final 28x28 image.  MNIST strokes are
# about 2-4 px wide (bundled sample: 2 x area / perimeter of the ink, median
# 2.8 px, 10th-90th percentile 2.2-4.0); a ball-point digit photographed large
# comes out under 1 px after fitting and faint after anti-aliasing, a felt-pen
# one as a blob.  Both are brought into this range (tuned as _DIGIT_BOX below).
_MIN_STROKE = 2.2
# Ink at or above this percentile of the ink pixels' strength counts as full ink
# (255); fainter ink keeps its grey level, as anti-aliased MNIST edges do.
_INK_FULL_PERCENTILE = 90.0
_MAX_STROKE = 2.8
# The fitted digit's longer side.  MNIST's box is 20 px; one pixel less scored
# better on the tuning half of real handwriting from outside MNIST (96.2% against
# 95.3%, benchmarks/image_preparation.py) and no worse on MNIST digits rendered
# as scans: thresholding at the ink's core drops the grey rim that MNIST's
# anti-aliasing leaves around its 20 px box.
_DIGIT_BOX = 19
# A composite whose grey levels span at most this much is blank (no ink left on it).
_BLANK_SPREAD = 2
# The faintest peak of an MNIST digit (bundled held-out sample: every digit peaks at 254 or 255).
_MNIST_MIN_PEAK = 254


def load_image(image: Any, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open ``image`` as a Pillow image in mode ``L`` (8-bit greyscale).

    Steps, each needed by real pictures:

    1. EXIF orientation is applied (``ImageOps.exif_transpose``): phones store
       the sensor's orientation and a rotation tag, so a digit photographed
       upright is stored sideways.
    2. Transparency is composited on white: a drawing exported with an alpha
       channel often stores the ink only in alpha, over "transparent black"
       colour values, and would otherwise read as black on black.  Light ink
       (white strokes on a transparent canvas) vanishes on white: when the
       composite on white is blank, the image goes on black instead.
    3. Colour becomes luma (ITU-R 601-2, Pillow's ``convert("L")``): ink colour
       carries no digit identity.

    Args:
        image: A path (``str`` or ``os.PathLike``), the file's bytes, a
            ``PIL.Image.Image``, or a numpy array shaped (H, W), (H, W, 1),
            (H, W, 3) or (H, W, 4).  Array values: uint8 or other integers
            0-255, bool, or floats in [0, 1] (scaled by 255) or [0, 255].
        max_pixels: Images larger than this many pixels are refused.

    Returns:
        A ``PIL.Image.Image`` in mode ``L``.

    Raises:
        ImageError: The file cannot be read or is not an image Pillow can decode,
            the image is larger than ``max_pixels``, or an array has another
            shape, dtype or value range.
    """
    name = _describe(image)
    if isinstance(image, np.ndarray):
        picture = _from_array(image, name)
    elif isinstance(image, Image.Image):
        picture = image
    elif isinstance(image, (bytes, bytearray, memoryview)):
        picture = _open(io.BytesIO(bytes(image)), name, max_pixels)
    elif isinstance(image, (str, os.PathLike)):
        picture = _open(image, name, max_pixels)
    else:
        raise ImageError(f"{name}: expected a path, bytes, a PIL image or a numpy array, got {type(image).__name__}")
    width, height = picture.size
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}; crop or shrink it to the digit"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{name}: image is empty ({width}x{height})")
    try:
        picture = ImageOps.exif_transpose(picture)
        if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
            rgba = picture.convert("RGBA")
            on_white, on_black = (
                Image.alpha_composite(Image.new("RGBA", rgba.size, (level, level, level, 255)), rgba)
                for level in (255, 0)
            )
            # Light ink on transparency (white strokes) vanishes on white: then, and only then, back it with
            # black.  Comparing contrasts instead would put a white canvas with transparent margins on black.
            low, high = cast(tuple[int, int], on_white.convert("L").getextrema())  # one band: (min, max)
            picture = on_black if high - low <= _BLANK_SPREAD else on_white
        if picture.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            picture = _wide_to_l(picture)
        return picture.convert("L")
    except (OSError, ValueError) as exc:
        raise ImageError(f"{name}: cannot decode the image ({exc})") from exc


def preprocess_digit(
    image: Any, *, invert: InvertMode | bool = "auto", preprocess: bool = True, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Prepare one picture of a handwritten digit the way MNIST's digits were prepared.

    After :func:`load_image` (EXIF orientation, alpha on white, greyscale):

    4. Polarity: MNIST digits are light on black.  With ``invert="auto"`` the
       background is taken as the median of the image's outer frame (the digit
       rarely touches every edge): a light frame (paper, a paint program's
       white canvas) means dark ink, and the image is inverted.
    5. A 28x28 image that is already light on black (``auto``) is returned
       unchanged: it is most likely an MNIST-style digit already, and
       re-centring it would only move it.
    6. Background removal: the paper level is estimated locally (a maximum
       filter over a window much wider than a stroke, smoothed), and ink is measured as darkness below that level, so a
       shadow or a lighting gradient across a photo does not become ink.
       Otsu's threshold (N. Otsu, "A threshold selection method from gray-level
       histograms", IEEE Trans. SMC 9(1), 1979) then separates ink from paper
       and JPEG noise; ink keeps its grey levels above the threshold.
    7. Crop to the ink's bounding box, ignoring the faintest 0.2% of the ink
       mass on each side so that a speck of dust does not stretch the box.
    8. Stroke width: strokes are thickened (a maximum filter) or thinned (a
       minimum filter) so that, once fitted, they are 2.2-2.8 px wide, within
       MNIST's range (measured on held-out MNIST digits: median 2.8 px); a
       thin ball-point line would otherwise fade away and a felt pen blot.
    9. MNIST's size normalisation: the crop is resized, preserving its aspect
       ratio, with an area-averaging (anti-aliasing) filter, so that its longer
       side is 19 px (MNIST's box is 20 px, with an anti-aliased rim; 19 px
       measured better on real handwriting from outside MNIST, see
       benchmarks/image_preparation.py).
    10. MNIST's centring: the digit is placed in a 28x28 black
        field so that its centre of mass (intensity-weighted) falls on the
        field's centre, rounded to a whole pixel and kept inside the field.

    With ``preprocess=False`` only steps 1-4 run and the image is resized to
    28x28 as it is (for images already cropped and centred like MNIST).  An
    image kept as it is (step 5, or ``preprocess=False``) is refused when
    uniform, and a faint one (peak under 254, e.g. a 0/1 mask) is scaled to
    MNIST's full ink (peak 255).

    Args:
        image: See :func:`load_image`: a path, bytes, a PIL image or an array of
            any size, greyscale or colour.
        invert: ``"auto"`` (decide from the background), ``"yes"``/``True``
            (the digit is dark on light: invert), ``"no"``/``False`` (it is
            already light on dark).
        preprocess: ``False`` skips steps 5-10 (see above).
        max_pixels: Images larger than this are refused (decompression bombs).

    Returns:
        np.ndarray of shape (28, 28), dtype uint8, light digit on black (0).

    Raises:
        ImageError: As :func:`load_image`, or ``invert`` is not one of the
            accepted values, or the image holds no ink (a blank page).

    >>> blank = np.zeros((40, 30), dtype=np.uint8)
    >>> blank[10:30, 12:16] = 255                     # a light "1" on black
    >>> out = preprocess_digit(blank)
    >>> out.shape, out.dtype, int(out[:, :4].max()), int(out.max())
    ((28, 28), dtype('uint8'), 0, 255)
    """
    invert_mode = _invert_mode(invert)
    name = _describe(image)
    grey = load_image(image, max_pixels=max_pixels)
    pixels = np.asarray(grey, dtype=np.float32)
    light_background = _background_level(pixels) > 127.5
    flip = light_background if invert_mode == "auto" else invert_mode == "yes"
    if invert_mode == "auto" and pixels.shape == (MNIST_SIDE, MNIST_SIDE) and not flip:
        return _full_ink(np.asarray(grey, dtype=np.uint8), name)
    if not preprocess:
        digit = 255.0 - pixels if flip else pixels
        small = Image.fromarray(np.clip(digit, 0, 255).astype(np.uint8))
        if small.size != (MNIST_SIDE, MNIST_SIDE):
            small = small.resize(
                (MNIST_SIDE, MNIST_SIDE),
                Image.Resampling.BOX if min(small.size) > MNIST_SIDE else Image.Resampling.BILINEAR,
            )
        return _full_ink(np.asarray(small, dtype=np.uint8), name)
    ink = _ink(255.0 - pixels if flip else pixels)
    if not np.any(ink > 0):
        raise ImageError(f"{name}: no digit found (the image is blank after background removal)")
    ink = _crop_to_ink(ink)
    ink = _normalise_stroke(ink)
    fitted = _fit_in_box(ink, _DIGIT_BOX)
    return _centre_by_mass(fitted, MNIST_SIDE)


def _full_ink(digit: np.ndarray, name: str) -> np.ndarray:
    """An image taken as it is (steps 5 and ``preprocess=False``), refused if blank, brought to full ink.

    A uniform image holds no digit.  MNIST's strokes reach full ink (each of the
    bundled 1,000 held-out digits peaks at 254 or 255), so a fainter image (a 0/1
    mask, a faint scan) is scaled until its peak is 255, as step 10 does.
    """
    low, peak = int(digit.min()), int(digit.max())
    if peak <= low:
        raise ImageError(f"{name}: no digit found (the image is one uniform level, {peak})")
    if peak >= _MNIST_MIN_PEAK:
        return digit.copy()
    return np.clip(np.rint(digit.astype(np.float32) * (255.0 / peak)), 0, 255).astype(np.uint8)


def _describe(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, np.ndarray):
        return f"array shaped {image.shape}"
    if isinstance(image, Image.Image):
        return f"PIL image {image.size[0]}x{image.size[1]}"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"{len(image)} bytes"
    return type(image).__name__


def _invert_mode(invert: Any) -> str:
    if invert is True or invert == "yes":
        return "yes"
    if invert is False or invert == "no":
        return "no"
    if invert == "auto":
        return "auto"
    raise ImageError(f"expected invert to be 'auto', 'yes' or 'no', got {invert!r}")


def _open(source: Any, name: str, max_pixels: int) -> Image.Image:
    # Pillow's decompression-bomb guard warns at 89 MP; the size check after opening
    # (header only, nothing decoded yet) is ours, so the warning is noise here.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(source)
            picture.size  # noqa: B018 - the header is parsed; pixels are decoded on first use
    except Image.DecompressionBombError:  # over twice Pillow's MAX_IMAGE_PIXELS: refused before ours is checked
        raise ImageError(
            f"{name}: image is too large to be a digit: over Pillow's limit of "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels (the limit here is {max_pixels:,}); "
            f"crop or shrink it to the digit"
        ) from None
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, expected an image file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow raises SyntaxError for some broken headers
        raise ImageError(f"{name}: not an image Pillow can read ({exc})") from exc
    if picture.size[0] * picture.size[1] <= max_pixels:  # else refused by the caller, never decoded
        try:
            picture.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"{name}: cannot decode the image ({exc})") from exc
    return picture


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or array.ndim == 3 and array.shape[2] in (3, 4)):
        raise ImageError(f"{name}: expected an image shaped (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ImageError(f"{name}: expected pixel values 0-255, got {array.min()} to {array.max()}")
        array = array.astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageError(f"{name}: expected finite pixel values, got NaN or infinity")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise ImageError(f"{name}: expected float pixels in [0, 1] or [0, 255], got {low:g} to {high:g}")
        scale = 255.0 if high <= 1.0 else 1.0
        array = np.rint(array * scale).astype(np.uint8)
    else:
        raise ImageError(f"{name}: expected integer, bool or float pixels, got dtype {array.dtype}")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.ndim if array.ndim == 2 else array.shape[2]]
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def _wide_to_l(picture: Image.Image) -> Image.Image:
    """16-bit and float greyscale (some TIFF/PNG scans): rescale the used range to 0-255."""
    values = np.asarray(picture, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    span = high - low if high > low else 1.0
    return Image.fromarray(np.rint((values - low) * 255.0 / span).astype(np.uint8), mode="L")


def _background_level(pixels: np.ndarray) -> float:
    """Median of the outer frame (a tenth of each side, at least one pixel)."""
    height, width = pixels.shape
    band_y, band_x = max(1, height // 10), max(1, width // 10)
    frame = np.concatenate(
        [pixels[:band_y].ravel(), pixels[-band_y:].ravel(), pixels[:, :band_x].ravel(), pixels[:, -band_x:].ravel()]
    )
    return float(np.median(frame))


def _working_copy(darkness: np.ndarray) -> np.ndarray:
    height, width = darkness.shape
    longest = max(height, width)
    if longest <= _WORKING_SIDE:
        return darkness
    scale = _WORKING_SIDE / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(darkness, mode="F").resize(size, Image.Resampling.BOX), dtype=np.float32)


def _ink(darkness: np.ndarray) -> np.ndarray:
    """Ink strength 0-1 from a darkness image (ink high), background removed (steps 6)."""
    darkness = _working_copy(darkness)
    height, width = darkness.shape
    # Local paper level: the lowest darkness (brightest paper) within a window several
    # strokes wide, computed on a reduced copy (Pillow's rank filters cost window^2).
    factor = max(1, min(height, width) // 32)
    small = Image.fromarray(darkness, mode="F").reduce(factor) if factor > 1 else Image.fromarray(darkness, mode="F")
    window = max(3, (min(small.size) // 3) | 1)
    # Bilinear enlargement back to full size smooths the estimate between windows.
    paper = Image.fromarray(_window_extreme(np.asarray(small, dtype=np.float32), window, np.min), mode="F")
    paper_level = np.asarray(paper.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    signal = np.clip(darkness - paper_level, 0, None)
    if signal.max() <= 0:
        return np.zeros_like(signal)
    threshold = _otsu(signal)
    strong = signal[signal > threshold]
    if strong.size == 0:
        return np.zeros_like(signal)
    top = float(np.percentile(strong, _INK_FULL_PERCENTILE))
    if top <= threshold:
        top = float(strong.max())
    if top <= threshold:
        return (signal > threshold).astype(np.float32)
    return np.clip((signal - threshold) / (top - threshold), 0.0, 1.0).astype(np.float32)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold over a 256-bin histogram of ``values`` (Otsu 1979)."""
    high = float(values.max())
    # 256 equal bins over [0, high] (np.histogram's binning, by bincount: several times faster).
    bins = np.minimum((values.ravel() * (256.0 / high)).astype(np.int64), 255)
    hist = np.bincount(bins, minlength=256)
    edges = np.linspace(0.0, high, 257)
    weights = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(weights)
    total = below[-1]
    mass_below = np.cumsum(weights * centres)
    above = total - below
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_below = mass_below / below
        mean_above = (mass_below[-1] - mass_below) / above
        between = below * above * (mean_below - mean_above) ** 2
    between = np.nan_to_num(between, nan=0.0)
    return float(edges[int(np.argmax(between)) + 1])


def _crop_to_ink(ink: np.ndarray, trim: float = 0.002) -> np.ndarray:
    """Bounding box of the ink, dropping at most ``trim`` of its mass on each side (step 7)."""

    def span(profile: np.ndarray) -> tuple[int, int]:
        cumulative = np.cumsum(profile) / profile.sum()
        first = int(np.searchsorted(cumulative, trim, side="right"))
        last = int(np.searchsorted(cumulative, 1.0 - trim, side="left"))
        nonzero = np.flatnonzero(profile)
        first = max(first, int(nonzero[0]))
        last = min(max(last, first), int(nonzero[-1]))
        return first, last + 1

    top, bottom = span(ink.sum(axis=1))
    left, right = span(ink.sum(axis=0))
    return ink[top:bottom, left:right]


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: 2 x area / perimeter of the thresholded ink."""
    mask = ink > 0.5
    area = int(mask.sum())
    if area == 0:
        return 0.0
    padded = np.pad(mask, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    boundary = area - int(interior.sum())
    return 2.0 * area / max(boundary, 1)


def _normalise_stroke(ink: np.ndarray) -> np.ndarray:
    """Bring the stroke width, once fitted, into [_MIN_STROKE, _MAX_STROKE] px (step 8).

    A maximum filter of odd size k widens a stroke by k - 1 pixels, a minimum filter
    narrows it by as much; the change is made at the crop's resolution, before fitting.
    """
    scale = _DIGIT_BOX / max(ink.shape)
    width = _stroke_width(ink) * scale
    if width <= 0 or _MIN_STROKE <= width <= _MAX_STROKE:
        return ink
    target = _MIN_STROKE if width < _MIN_STROKE else _MAX_STROKE
    size = int(round(abs(target - width) / scale)) + 1
    size += 1 - size % 2
    if size < 3:
        return ink
    if width < _MIN_STROKE:
        return _window_extreme(np.pad(ink, size // 2), size, np.max)
    thin = _window_extreme(ink, size, np.min)
    return thin if np.any(thin > 0.5) else ink


def _window_extreme(array: np.ndarray, size: int, reduce: Any) -> np.ndarray:
    """Minimum or maximum over ``size`` x ``size`` windows (edges replicated), same shape.

    A square window's extreme is separable (rows, then columns), so this costs
    2 x ``size`` comparisons a pixel where Pillow's rank filters cost ``size``^2.

    >>> _window_extreme(np.array([[0, 0, 0], [0, 5, 0], [0, 0, 0]], dtype=np.float32), 3, np.max).tolist()
    [[5.0, 5.0, 5.0], [5.0, 5.0, 5.0], [5.0, 5.0, 5.0]]
    """
    half = size // 2
    out = np.pad(array, half, mode="edge")
    for axis in (0, 1):
        out = reduce(np.lib.stride_tricks.sliding_window_view(out, size, axis=axis), axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def _fit_in_box(ink: np.ndarray, box: int) -> np.ndarray:
    """Resize so the longer side is ``box`` px, aspect ratio kept, area-averaged (step 9)."""
    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = Image.fromarray(ink.astype(np.float32), mode="F")
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.asarray(picture.resize(size, resample), dtype=np.float32)


def _centre_by_mass(digit: np.ndarray, side: int) -> np.ndarray:
    """Place ``digit`` in a ``side`` x ``side`` black field, centre of mass at the centre (step 10)."""
    height, width = digit.shape
    total = float(digit.sum())
    rows, cols = np.indices(digit.shape)
    com_y = float((rows * digit).sum()) / total if total > 0 else (height - 1) / 2
    com_x = float((cols * digit).sum()) / total if total > 0 else (width - 1) / 2
    centre = (side - 1) / 2
    top = int(np.clip(round(centre - com_y), 0, side - height))
    left = int(np.clip(round(centre - com_x), 0, side - width))
    field = np.zeros((side, side), dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    peak = float(field.max())
    if peak > 0:
        field *= 255.0 / peak
    return np.clip(np.rint(field), 0, 255).astype(np.uint8)
