"""ShapesWorld scenes and their rendering: RGB (shaded by depth, with occlusion) and depth maps.

A scene holds 1-5 flat objects facing the camera. Each object is drawn from a small pixel template
(shape x size x pattern, computed once per image size by supersampling), pasted at its integer
centre; images are rendered all at once, one "depth rank" at a time (the farthest object of every
image first), so nearer objects overwrite farther ones (painter's algorithm) and every write is a
vectorised numpy scatter. The z-buffer holds each visible object's depth in metres; the sensor
depth map adds Gaussian noise and drops a few pixels to 0 (invalid), as a real RGB-D camera does.

Numpy only; deterministic for a given ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "grey", "white")
SIZES = ("small", "large")
PATTERNS = ("plain", "striped", "dotted")

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "green": (40, 190, 60),
    "blue": (45, 95, 235),
    "yellow": (240, 225, 40),
    "purple": (160, 60, 210),
    "orange": (245, 140, 20),
    "grey": (120, 120, 120),
    "white": (245, 245, 245),
}
BACKGROUND_RGB = (28, 28, 34)

BACKGROUND_DEPTH_M = 6.0
MIN_DEPTH_M = 1.0
MAX_DEPTH_M = 5.0
FAR_SHADE = 0.6            # brightness factor at MAX_DEPTH_M (1.0 at MIN_DEPTH_M)
PATTERN_SHADE = 0.45       # stripes and dots multiply the object colour by this
INVALID_DEPTH_FRACTION = 0.005
SIZE_RADIUS = {"small": 0.11, "large": 0.19}   # object radius as a fraction of the image size
MIN_SEPARATION = 0.8       # centres at least MIN_SEPARATION * (r1 + r2) apart
PLACEMENT_TRIES = 32

_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ObjectSpec:
    """One object: its attributes, centre in pixels (column ``x``, row ``y``), depth in metres."""

    shape: str
    colour: str
    size: str
    pattern: str
    x: int
    y: int
    depth: float


@dataclass(frozen=True)
class Scene:
    """The objects of one image, in no particular order."""

    image_id: int
    objects: tuple[ObjectSpec, ...]


@dataclass(frozen=True)
class _Template:
    """The pixels one object covers, relative to its centre, and each pixel's pattern shade."""

    dy: np.ndarray        # (P,) int64
    dx: np.ndarray        # (P,) int64
    shade: np.ndarray     # (P,) float32, 1.0 or PATTERN_SHADE

    @property
    def half_extent(self) -> int:
        return int(max(np.abs(self.dy).max(), np.abs(self.dx).max()))


def radius_px(size: str, image_size: int) -> int:
    """The nominal radius in pixels of a ``size`` object in an ``image_size`` image."""
    return max(2, round(SIZE_RADIUS[size] * image_size))


def pattern_period(image_size: int) -> int:
    """The period in pixels of stripes and dots (4 at 64x64)."""
    return max(4, round(image_size / 16))


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (V, 2) as (x, y) in units of the radius, y pointing down."""
    if shape == "square":
        a = 0.82
        return np.array([(-a, -a), (a, -a), (a, a), (-a, a)])
    if shape == "diamond":
        return np.array([(0.0, -1.1), (0.8, 0.0), (0.0, 1.1), (-0.8, 0.0)])
    if shape == "triangle":
        return np.array([(0.0, -0.9), (1.04, 0.9), (-1.04, 0.9)])
    if shape == "star":
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, 1.12, 0.5)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles) + 0.05], axis=1)
    if shape == "hexagon":
        angles = np.deg2rad(60.0 * np.arange(6))
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")


def _inside(shape: str, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Whether unit-radius points (px, py) lie inside ``shape`` (even-odd ray casting)."""
    if shape == "circle":
        return px * px + py * py <= 0.95 ** 2
    vertices = _unit_polygon(shape)
    inside = np.zeros(px.shape, dtype=bool)
    previous = len(vertices) - 1
    for current in range(len(vertices)):
        (x0, y0), (x1, y1) = vertices[current], vertices[previous]
        crosses = (y0 > py) != (y1 > py)
        x_cross = (x1 - x0) * (py - y0) / (y1 - y0 + 1e-12) + x0
        inside ^= crosses & (px < x_cross)
        previous = current
    return inside


@lru_cache(maxsize=256)
def _template(shape: str, radius: int, pattern: str, period: int) -> _Template:
    half = math.ceil(1.15 * radius) + 1
    offsets = np.arange(-half, half + 1)
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
    # (rows, cols, sub_rows, sub_cols) sample points in units of the radius
    py = (offsets[:, None, None, None] + sub[None, None, :, None]) / radius
    px = (offsets[None, :, None, None] + sub[None, None, None, :]) / radius
    py, px = np.broadcast_arrays(py, px)
    coverage = _inside(shape, px, py).mean(axis=(2, 3))
    rows, cols = np.nonzero(coverage >= 0.5)
    dy, dx = offsets[rows].astype(np.int64), offsets[cols].astype(np.int64)
    half_period = period // 2
    if pattern == "striped":
        dark = (dx + dy) % period < half_period
    elif pattern == "dotted":   # small square dots on a sparser grid than the stripes
        dot_period = period + half_period
        dark = ((dx + 1) % dot_period < half_period) & ((dy + 1) % dot_period < half_period)
    elif pattern == "plain":
        dark = np.zeros(dx.shape, dtype=bool)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; known patterns: {', '.join(PATTERNS)}")
    shade = np.where(dark, PATTERN_SHADE, 1.0).astype(np.float32)
    return _Template(dy, dx, shade)


def _templates(image_size: int) -> list[_Template]:
    """All templates, indexed by
    ``(shape_index * len(SIZES) + size_index) * len(PATTERNS) + pattern_index``."""
    period = pattern_period(image_size)
    return [_template(shape, radius_px(size, image_size), pattern, period)
            for shape in SHAPES for size in SIZES for pattern in PATTERNS]


def placement_margin(size: str, image_size: int) -> int:
    """How far (pixels) a ``size`` object's centre must stay from the border to be fully inside."""
    period = pattern_period(image_size)
    radius = radius_px(size, image_size)
    return max(_template(shape, radius, "plain", period).half_extent for shape in SHAPES)


def object_mask(obj: ObjectSpec, image_size: int) -> np.ndarray:
    """The full silhouette of ``obj`` (ignoring occlusion) as a bool (S, S) array."""
    template = _template(obj.shape, radius_px(obj.size, image_size), obj.pattern,
                         pattern_period(image_size))
    mask = np.zeros((image_size, image_size), dtype=bool)
    rows, cols = obj.y + template.dy, obj.x + template.dx
    keep = (rows >= 0) & (rows < image_size) & (cols >= 0) & (cols < image_size)
    mask[rows[keep], cols[keep]] = True
    return mask


def depth_shade(depth: np.ndarray) -> np.ndarray:
    """Brightness factor for objects at ``depth`` metres: 1.0 at MIN_DEPTH_M down to FAR_SHADE."""
    t = (np.asarray(depth, dtype=np.float64) - MIN_DEPTH_M) / (MAX_DEPTH_M - MIN_DEPTH_M)
    return 1.0 - (1.0 - FAR_SHADE) * np.clip(t, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Scene sampling
# ---------------------------------------------------------------------------------------------

def sample_scenes(rng: np.random.Generator, count: int, first_image_id: int, image_size: int,
                  min_objects: int, max_objects: int) -> list[Scene]:
    """Draw ``count`` scenes with ids ``first_image_id, first_image_id + 1, ...``.

    Attributes are uniform; depths uniform in [MIN_DEPTH_M, MAX_DEPTH_M]; centres are placed by
    rejection so that any two are at least MIN_SEPARATION * (r1 + r2) apart (each object keeps
    most of its area visible). A large object that finds no room becomes small; an object that
    still finds none is left out (rare: the scene then has one object fewer).
    """
    slots = max_objects
    n_objects = rng.integers(min_objects, max_objects + 1, size=count)
    shape = rng.integers(0, len(SHAPES), size=(count, slots))
    colour = rng.integers(0, len(COLOURS), size=(count, slots))
    size = rng.integers(0, len(SIZES), size=(count, slots))
    pattern = rng.integers(0, len(PATTERNS), size=(count, slots))
    depth = np.round(rng.uniform(MIN_DEPTH_M, MAX_DEPTH_M, size=(count, slots)), 3)
    active = np.arange(slots)[None, :] < n_objects[:, None]
    x, y = _place_objects(rng, size, active, image_size)
    columns = [a.tolist() for a in (shape, colour, size, pattern, x, y, depth, active)]
    scenes = []
    for row, values in enumerate(zip(*columns)):
        shapes, colours, sizes, patterns, xs, ys, depths, actives = values
        objects = tuple(
            ObjectSpec(SHAPES[shapes[k]], COLOURS[colours[k]], SIZES[sizes[k]],
                       PATTERNS[patterns[k]], xs[k], ys[k], depths[k])
            for k in range(slots) if actives[k])
        scenes.append(Scene(first_image_id + row, objects))
    return scenes


def _place_objects(rng: np.random.Generator, size: np.ndarray, active: np.ndarray,
                   image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y), each (N, K) int64, for the ``active`` (N, K) objects.

    Updates ``size`` (large -> small when a large object finds no room) and ``active`` (objects
    that find no room at all are dropped) in place.
    """
    count, slots = size.shape
    radii = np.array([radius_px(s, image_size) for s in SIZES], dtype=np.float64)
    margins = np.array([placement_margin(s, image_size) for s in SIZES], dtype=np.int64)
    x = np.zeros((count, slots), dtype=np.int64)
    y = np.zeros((count, slots), dtype=np.int64)
    for k in range(slots):
        pending = active[:, k].copy()
        for attempt in range(2):
            rows = np.flatnonzero(pending)
            if len(rows) == 0:
                break
            margin = margins[size[rows, k]][:, None]                          # (R, 1)
            cand_x = rng.integers(margin, image_size - margin, size=(len(rows), PLACEMENT_TRIES))
            cand_y = rng.integers(margin, image_size - margin, size=(len(rows), PLACEMENT_TRIES))
            free = np.ones(cand_x.shape, dtype=bool)                          # (R, T)
            radius_k = radii[size[rows, k]]
            for j in range(k):
                min_dist = MIN_SEPARATION * (radius_k + radii[size[rows, j]])
                dist2 = (cand_x - x[rows, j, None]) ** 2 + (cand_y - y[rows, j, None]) ** 2
                free &= ~active[rows, j, None] | (dist2 >= (min_dist ** 2)[:, None])
            found = free.any(axis=1)
            first = free.argmax(axis=1)
            placed = rows[found]
            x[placed, k] = cand_x[found, first[found]]
            y[placed, k] = cand_y[found, first[found]]
            pending[placed] = False
            if attempt == 0:
                size[pending, k] = 0   # retry a large object that found no room as a small one
        active[pending, k] = False
    return x, y


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def render_scenes(scenes: list[Scene], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render ``scenes`` to RGB uint8 (N, S, S, 3) and a clean z-buffer float32 (N, S, S) in metres.

    Background pixels hold BACKGROUND_RGB and BACKGROUND_DEPTH_M. Objects are shaded by depth
    (:func:`depth_shade`) and pattern; nearer objects occlude farther ones.
    """
    count, side = len(scenes), image_size
    rgb = np.empty((count, side, side, 3), dtype=np.uint8)
    # one tiled row per image: ~10x faster than broadcasting a 3-vector over every pixel
    background_row = np.tile(np.array(BACKGROUND_RGB, dtype=np.uint8), side * side)
    rgb.reshape(count, side * side * 3)[:] = background_row
    zbuffer = np.full((count, side, side), BACKGROUND_DEPTH_M, dtype=np.float32)
    objects = _flatten(scenes)
    if len(objects["image"]) == 0:
        return rgb, zbuffer
    rank = _far_first_rank(objects["image"], objects["depth"])
    template_id = ((objects["shape"] * len(SIZES) + objects["size"]) * len(PATTERNS)
                   + objects["pattern"])
    group = rank * (len(SHAPES) * len(SIZES) * len(PATTERNS)) + template_id
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    templates = _templates(image_size)
    palette = np.array([COLOUR_RGB[c] for c in COLOURS], dtype=np.float32)
    shade = depth_shade(objects["depth"]).astype(np.float32)
    base_colour = palette[objects["colour"]] * shade[:, None]                          # (M, 3)
    centre = (objects["image"] * side + objects["y"]) * side + objects["x"]           # (M,)
    depth32 = objects["depth"].astype(np.float32)
    rgb_flat, z_flat = rgb.reshape(-1, 3), zbuffer.reshape(-1)
    # Groups run in increasing rank, so within every image the farther object is drawn first.
    for members in np.split(order, bounds):
        template = templates[template_id[members[0]]]
        pixels = centre[members, None] + (template.dy * side + template.dx)[None, :]  # (n, P)
        colour = base_colour[members, None, :] * template.shade[None, :, None]        # (n, P, 3)
        rgb_flat[pixels] = (colour + 0.5).astype(np.uint8)
        z_flat[pixels] = depth32[members, None]
    return rgb, zbuffer


def _flatten(scenes: list[Scene]) -> dict[str, np.ndarray]:
    """All objects of all scenes as parallel arrays (image row, attribute indices, x, y, depth)."""
    shape_index = {name: i for i, name in enumerate(SHAPES)}
    colour_index = {name: i for i, name in enumerate(COLOURS)}
    size_index = {name: i for i, name in enumerate(SIZES)}
    pattern_index = {name: i for i, name in enumerate(PATTERNS)}
    rows = [(row, shape_index[o.shape], colour_index[o.colour], size_index[o.size],
             pattern_index[o.pattern], o.x, o.y)
            for row, scene in enumerate(scenes) for o in scene.objects]
    depths = [o.depth for scene in scenes for o in scene.objects]
    table = np.array(rows, dtype=np.int64).reshape(-1, 7)
    names = ("image", "shape", "colour", "size", "pattern", "x", "y")
    flat = {name: table[:, i] for i, name in enumerate(names)}
    flat["depth"] = np.array(depths, dtype=np.float64)
    return flat


def _far_first_rank(image: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Each object's drawing rank within its image: 0 for the farthest, then nearer ones."""
    order = np.lexsort((-depth, image))
    sorted_image = image[order]
    starts = np.flatnonzero(np.r_[True, sorted_image[1:] != sorted_image[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - run_start
    return rank


def apply_sensor_noise(depth: np.ndarray, noise_m: float, rng: np.random.Generator,
                       invalid_fraction: float = INVALID_DEPTH_FRACTION) -> None:
    """Turn a clean z-buffer ``depth`` (N, H, W) float32 metres into a depth-camera reading,
    in place.

    Adds Gaussian noise of std ``noise_m`` and sets about ``invalid_fraction`` of the pixels to 0
    (no reading). For speed the noise of each image is a window, at a random offset, into one bank
    of ~1M i.i.d. normals: within an image the noise is i.i.d. Gaussian; across images the windows
    may overlap, which no model can exploit to recover the scene.
    """
    count = depth.shape[0]
    pixels = int(np.prod(depth.shape[1:], dtype=np.int64))
    if count == 0 or pixels == 0:
        return
    flat = depth.reshape(count, pixels)
    bank = rng.standard_normal(max(1 << 20, 4 * pixels), dtype=np.float32)
    bank *= np.float32(noise_m)
    windows = np.lib.stride_tricks.sliding_window_view(bank, pixels)      # (B - P + 1, P) view
    starts = rng.integers(0, len(windows), size=count)
    for begin in range(0, count, 1024):                                   # bounded temporaries
        stop = min(begin + 1024, count)
        flat[begin:stop] += windows[starts[begin:stop]]
    n_invalid = int(rng.binomial(depth.size, invalid_fraction))
    depth.reshape(-1)[rng.integers(0, depth.size, size=n_invalid)] = 0.0
