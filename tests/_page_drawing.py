"""Drawing a 28x28 digit on the page's canvas with the mouse, as a person would: along its skeleton.

Shared by tests/test_page_browser.py and benchmarks/page_drawn_digits.py.  ``page`` is a Playwright page
showing the draw-a-digit page.
"""

from __future__ import annotations

import numpy as np

# Pixels counted as ink when tracing a digit's skeleton: MNIST's anti-aliased edges are below this.
INK_THRESHOLD = 128


def skeleton(ink: np.ndarray) -> np.ndarray:
    """One-pixel-wide skeleton of a boolean image: Zhang and Suen's thinning (Communications of the ACM 27(3), 1984).

    >>> bar = np.zeros((5, 9), dtype=bool)
    >>> bar[1:4, 1:8] = True                       # a stroke 3 pixels thick
    >>> skeleton(bar).astype(int)
    array([[0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 1, 1, 1, 1, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0]])
    """
    image = np.pad(ink.astype(np.uint8), 1)
    while True:
        changed = False
        for second_pass in (False, True):
            c = image[1:-1, 1:-1]
            # The 8 neighbours clockwise from north: P2..P9 in the paper's naming.
            p2, p3, p4, p5 = image[:-2, 1:-1], image[:-2, 2:], image[1:-1, 2:], image[2:, 2:]
            p6, p7, p8, p9 = image[2:, 1:-1], image[2:, :-2], image[1:-1, :-2], image[:-2, :-2]
            ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            neighbours = sum(ring[:-1])
            transitions = sum(((a == 0) & (b == 1)).astype(np.uint8) for a, b in zip(ring, ring[1:], strict=False))
            if second_pass:
                keep_shape = ((p2 * p4 * p8) == 0) & ((p2 * p6 * p8) == 0)
            else:
                keep_shape = ((p2 * p4 * p6) == 0) & ((p4 * p6 * p8) == 0)
            remove = (c == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1) & keep_shape
            if remove.any():
                c[remove] = 0
                changed = True
        if not changed:
            return image[1:-1, 1:-1].astype(bool)


def pen_paths(image: np.ndarray) -> list[list[tuple[int, int]]]:
    """The digit as pen strokes: paths of (row, column) along its skeleton, each edge drawn once."""
    thin = skeleton(image > INK_THRESHOLD)
    pixels = {(int(r), int(c)) for r, c in zip(*np.nonzero(thin), strict=True)}

    def linked(a: tuple[int, int], b: tuple[int, int]) -> bool:
        dr, dc = b[0] - a[0], b[1] - a[1]
        if dr and dc:  # a diagonal step is redundant where an L through a third skeleton pixel joins the two
            return (a[0], b[1]) not in pixels and (b[0], a[1]) not in pixels
        return True

    edges: dict[tuple[int, int], set[tuple[int, int]]] = {p: set() for p in pixels}
    for r, c in pixels:
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                other = (r + dr, c + dc)
                if other != (r, c) and other in pixels and linked((r, c), other):
                    edges[(r, c)].add(other)
    paths = []
    for lonely in sorted(p for p in pixels if not edges[p]):
        paths.append([lonely])
    while any(edges.values()):
        # Start at a line's end where there is one (fewest strokes), top-most first, as people write.
        open_ends = sorted(p for p, linked_to in edges.items() if len(linked_to) % 2 == 1)
        path = [open_ends[0] if open_ends else min(p for p, linked_to in edges.items() if linked_to)]
        while edges[path[-1]]:
            here = path[-1]
            step = min(edges[here], key=lambda p: (abs(p[0] - here[0]) + abs(p[1] - here[1]), p))
            edges[here].discard(step)
            edges[step].discard(here)
            path.append(step)
        paths.append(path)
    return paths


def draw(page, image: np.ndarray, *, size: float = 1.0, left: float = 0.0, top: float = 0.0) -> int:
    """Draw a 28x28 digit on the canvas with the mouse along its skeleton; return the stroke count.

    The digit's 28x28 field covers ``size`` of the canvas side, its top-left corner at (``left``, ``top``)
    as fractions of the side: people rarely draw a digit centred and filling MNIST's 20x20 box.
    """
    box = page.locator("#pad").bounding_box()
    cell = box["width"] * size / 28

    def at(row: float, column: float) -> tuple[float, float]:
        return (
            box["x"] + left * box["width"] + (column + 0.5) * cell,
            box["y"] + top * box["height"] + (row + 0.5) * cell,
        )

    paths = pen_paths(image)
    for path in paths:
        points = np.array(path, dtype=float)
        if len(points) > 2:  # a hand moves smoothly, not along the pixel grid's staircase
            points[1:-1] = (points[:-2] + points[1:-1] + points[2:]) / 3
        page.mouse.move(*at(*points[0]))
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*at(*point))
        page.mouse.up()
    return len(paths)


def random_placement(rng: np.random.Generator) -> tuple[float, float, float]:
    """(size, left, top) for :func:`draw`: the digit's field covers 55-80% of the canvas, anywhere on it.

    Smaller than the canvas and off centre, so that only MNIST's preparation (crop to the ink, fit in
    20x20, centre by centre of mass) reads such drawings well; shrinking the whole canvas to 28x28 does not.
    """
    size = float(rng.uniform(0.55, 0.8))
    left, top = (float(v) for v in rng.uniform(0.0, 1.0 - size, 2))
    return size, left, top
