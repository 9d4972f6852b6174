"""Reading images and the torch ``Dataset`` over a sample table."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from medattn.errors import DataError

# Whole-slide scans and some ISIC images exceed PIL's decompression-bomb guard; they are trusted data.
Image.MAX_IMAGE_PIXELS = None


@functools.lru_cache(maxsize=4)
def _npz_split(file: str, split: str, mtime_ns: int) -> np.ndarray:
    with np.load(file, allow_pickle=False) as npz:
        return npz[f"{split}_images"]


def _npz_member(path: str) -> np.ndarray:
    file, _, member = path.rpartition("#")
    split, _, index = member.partition("/")
    try:
        arr = _npz_split(file, split, os.stat(file).st_mtime_ns)
        return arr[int(index)]
    except (OSError, KeyError, ValueError, IndexError) as err:
        raise DataError(f"{path}: cannot read this MedMNIST image ({err}); "
                        "check the file with `medattn data inspect medmnist:FILE`") from err


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(im: Image.Image, path: str = "") -> Image.Image:
    """An opened image as 8-bit RGB. 16-bit greyscale (modes ``I;16*``, and ``I`` read from a
    PNG) is scaled by its bit depth, value * 255 / 65535, as PNG defines the sample range (Pillow's
    own conversion clips at 255 and turns it white); 32-bit integer and float images, whose range
    is unknown, raise :class:`DataError` naming ``path``."""
    if im.mode in SIXTEEN_BIT or (im.mode == "I" and im.format == "PNG"):
        arr = np.asarray(im).astype(np.uint32)
        return Image.fromarray(((arr * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("I", "F"):
        kind = "32-bit integer" if im.mode == "I" else "32-bit floating-point"
        raise DataError(f"{path}: {kind} image (mode {im.mode}) of unknown value range; convert "
                        "it to an 8- or 16-bit PNG (`medattn data inspect SOURCE:PATH` lists "
                        "every such file)")
    return im.convert("RGB")


def read_image(path: str) -> Image.Image:
    """Decode one image (file path, or ``FILE.npz#split/index``) to an RGB ``PIL.Image``.

    RGBA/greyscale/palette images are converted to RGB (alpha dropped); 16-bit greyscale is
    scaled to 8 bits (see :func:`to_rgb`). A corrupt or truncated file raises
    :class:`DataError` naming it; ``medattn data inspect`` finds all such files at once.
    """
    if ".npz#" in path:
        arr = _npz_member(path)
        return to_rgb(Image.fromarray(arr), path)
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im, path)
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"{path}: image file not found; was it moved after the data set was "
                        "loaded? Re-run to reload the data set") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or unreadable image ({err}); replace or delete it "
                        "(`medattn data inspect SOURCE:PATH` lists every such file)") from err


def verify_image(path: str) -> str | None:
    """``None`` if the image decodes fully, else the reason (used by ``inspect`` and ``verify``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_image(path)
        return None
    except DataError as err:
        return str(err).split(": ", 1)[-1]


class ImageDataset:
    """A map-style dataset over a sample table.

    Items are ``(image, label, row_position)``: ``image`` is what ``transform`` returns (a float
    tensor 3 x H x W for :func:`medattn.data.build_transform`), ``label`` an int, ``row_position``
    the row's position in ``table`` (so predictions can be joined back to metadata).

    Args:
        table: a sample table (``path`` and ``label`` columns are used).
        transform: callable on a PIL RGB image; ``None`` returns the PIL image. A transform with
            ``accepts_arrays = True`` (the training transform of ``build_transform``) gets cached
            images as uint8 arrays H x W x 3 instead, which saves a PIL round trip per item.
        cache: an :class:`medattn.data.ImageCache`; images then come from it, decoded and resized.
    """

    def __init__(self, table: pd.DataFrame, transform: Callable | None = None, cache=None):
        self.paths = table["path"].astype(str).tolist()
        self.labels = table["label"].astype(np.int64).to_numpy()
        self.transform = transform
        self.cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        if self.cache is None:
            image = read_image(path)
        elif getattr(self.transform, "accepts_arrays", False):
            image = self.cache.get_array(path)
        else:
            image = self.cache.get(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i]), i
