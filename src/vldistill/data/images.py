"""Reading image files named by a dataset: one place for every reader's checks.

Every image a reader or store opens goes through :func:`image_header` (header only: cheap,
used to check a whole split up front) or :func:`read_image` (decoded). Both refuse, naming the
file, what it is and the fix:

- a file that is missing, or is not an image Pillow can read (text, zero bytes, truncated);
- an image with no pixels, or more than :data:`MAX_PIXELS` (checked from the header, before
  any decoding, so a crafted 100000 x 100000 header costs nothing);
- the wrong bit depth: a 16-bit / 32-bit single-channel image where an 8-bit RGB picture is
  expected (Pillow's RGB conversion would clip it to a white sheet without a word), or
  anything but a 16-bit single-channel map where depth in millimetres is expected.

:func:`check_inside` keeps paths written in a data file inside their root.
"""

from __future__ import annotations

import warnings
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from vldistill.core.errors import DataError, MissingFileError, VldistillError

MAX_PIXELS = 8192 * 8192
DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I")     # how Pillow opens a 16-bit grey PNG
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")   # not 8-bit pictures
_MODE_NAMES = {"1": "1-bit, 1 channel", "L": "8-bit, 1 channel", "P": "8-bit palette",
               "LA": "8-bit, 2 channels", "RGB": "8-bit, 3 channels",
               "RGBA": "8-bit, 4 channels", "CMYK": "8-bit, 4 channels",
               "F": "32-bit float, 1 channel", "I": "32-bit integer, 1 channel",
               "I;16": "16-bit, 1 channel", "I;16L": "16-bit, 1 channel",
               "I;16B": "16-bit, 1 channel", "I;16N": "16-bit, 1 channel"}
_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
           Image.DecompressionBombError)
Expect = Literal["rgb", "depth"]


def describe_mode(mode: str) -> str:
    return _MODE_NAMES.get(mode, f"mode {mode!r}")


def check_depth_mode(path: Path, mode: str) -> None:
    """Refuse a depth file that is not a 16-bit single-channel image, naming what it is."""
    if mode not in DEPTH_MODES:
        raise DataError(f"depth map {path} is {describe_mode(mode)} (image mode {mode!r}); "
                        f"expected a 16-bit single-channel PNG in millimetres (0 = invalid). "
                        f"Fix: re-save it as uint16 millimetres, e.g. "
                        f"Image.fromarray(depth_mm.astype(np.uint16)).save(path).")


def _check(image: Image.Image, path: Path, what: str, expect: Expect) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise DataError(f"{what} {path} has no pixels ({width} x {height}). Fix: replace it "
                        "with a valid image, or drop the questions that use it.")
    if width * height > MAX_PIXELS:
        raise _too_large(path, what, f"{width} x {height} pixels")
    if expect == "depth":
        check_depth_mode(path, image.mode)
    elif image.mode in WIDE_MODES:
        raise DataError(f"{what} {path} is {describe_mode(image.mode)} (image mode "
                        f"{image.mode!r}); expected an 8-bit RGB (or 8-bit grey) picture. "
                        "Fix: convert it to 8 bits per channel; if it is a depth map, list it "
                        "as depth, not as the image.")


def _too_large(path: Path, what: str, size: str) -> DataError:
    return DataError(f"{what} {path} is {size}, more than the {MAX_PIXELS:,} vldistill reads "
                     "(8192 x 8192). Fix: downscale it, or drop the questions that use it.")


def _open(path: Path, what: str) -> Image.Image:
    if not Path(path).is_file():
        raise MissingFileError(f"{what} {path} does not exist. Fix: check the folder and file "
                               f"naming, or drop the questions that use it.")
    with warnings.catch_warnings():          # our own limit (below Pillow's) decides, in _check
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError as error:     # over twice Pillow's limit
            raise _too_large(path, what, f"over {Image.MAX_IMAGE_PIXELS * 2:,} pixels "
                             f"({error})") from None


def _unreadable(path: Path, what: str, error: BaseException) -> DataError:
    return DataError(f"{what} {path} could not be read as an image ({type(error).__name__}: "
                     f"{error}). Fix: replace it with a valid PNG/JPEG file, or drop the "
                     f"questions that use it.")


def image_header(path: Path, what: str = "image", expect: Expect = "rgb"
                 ) -> tuple[tuple[int, int], str]:
    """(width, height) and mode from the file header only, after the checks above."""
    try:
        with _open(path, what) as image:
            _check(image, path, what, expect)
            return image.size, image.mode
    except VldistillError:
        raise
    except _ERRORS as error:
        raise _unreadable(path, what, error) from None


def read_image(path: Path, what: str = "image", expect: Expect = "rgb") -> Image.Image:
    """The decoded image (a copy: the file is closed), after the checks above."""
    try:
        with _open(path, what) as image:
            _check(image, path, what, expect)
            image.load()
            return image.copy()
    except VldistillError:
        raise
    except _ERRORS as error:
        raise _unreadable(path, what, error) from None


def read_rgb(path: Path, what: str = "image", size: int | None = None) -> np.ndarray:
    """The picture as uint8 (H, W, 3) RGB; (size, size, 3), resized bilinearly, when ``size``
    is given. What every reader and store returns for an image."""
    image = read_image(path, what).convert("RGB")
    if size is not None:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(image, dtype=np.uint8)


def check_inside(root: Path, relative: str, where: str) -> None:
    """Refuse an image path written in a data file that is empty, absolute, or climbs out of
    ``root`` with ``..``. The check is on the path as written: a symbolic link inside the root
    is followed, since DVC, git-annex and Hugging Face caches lay datasets out as links into a
    blob store, and a link is made by whoever controls the machine, not by the data file."""
    if not relative or "\x00" in relative:
        raise DataError(f"{where}: image path {relative!r} is empty or holds a NUL byte. Fix: "
                        "give the image's path relative to the image root.")
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or Path(relative).is_absolute():
        raise DataError(f"{where}: image path {relative!r} is not inside the image root {root}; "
                        "paths must be relative to the root, without '..'. Fix the row or move "
                        "the image under the root.")


def data_image_size(data: dict) -> int | None:
    """The image size the training data was read at (ShapesWorld or a resized folder), from a
    recipe's ``data`` section as saved in a checkpoint or manifest (a plain dict)."""
    if data.get("source") == "shapesworld":
        return data.get("shapesworld", {}).get("image_size", 64)
    return data.get("image_size")
