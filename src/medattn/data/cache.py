"""A disk cache of decoded, resized images shared by every run of a study.

Each image is stored once per short-side size as a raw ``uint8`` ``.npy`` array (H x W x 3): loading
one is a read and no decoding, which is what makes the cached training loader several times faster
than decoding full-size JPEGs every epoch (``benchmarks/bench_data.py``). Entries are keyed by the
source's absolute path, size and modification time (so a changed file gets a new entry) and by the
short side; they are written to a temporary file and renamed, so concurrent runs sharing one cache
never read a half-written entry.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from medattn.progress import progress_bar
from medattn.runs.atomic import atomic_write
from medattn.data.dataset import read_image, to_rgb
from medattn.errors import DataError


# The .npy header np.save writes for our entries (format 1.0, uint8, C order, H x W x 3)
_NPY_HEADER = re.compile(rb"\x93NUMPY\x01\x00..\{'descr': '\|u1', 'fortran_order': False, "
                         rb"'shape': \((\d+), (\d+), 3\), \} *\n", re.DOTALL)


def _load_entry(entry: Path) -> np.ndarray:
    """Read an entry. Ours have one fixed header form, parsed here without ``np.load``'s generic
    (``ast``-based) parser, which cost about as much as reading the pixels; any other file (or a
    truncated one) goes through ``np.load``, which reads it or raises."""
    with open(entry, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        n = f.readinto(buf)
    m = _NPY_HEADER.match(buf, 0, 128)
    if m is None or n != len(buf) or len(buf) - m.end() != int(m[1]) * int(m[2]) * 3:
        return np.load(entry, allow_pickle=False)
    return np.frombuffer(buf, np.uint8, offset=m.end()).reshape(int(m[1]), int(m[2]), 3)


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """Resize so that min(width, height) == ``short_side`` (aspect kept; antialiased)."""
    w, h = image.size
    if min(w, h) == short_side:
        return image
    f = short_side / min(w, h)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def _decode_small(path: str, short_side: int) -> Image.Image:
    if ".npz#" not in path:
        try:
            with Image.open(path) as im:
                # JPEG DCT scaling: decode at >= 2x the target size instead of full size
                if im.format == "JPEG":
                    w, h = im.size
                    f = 2 * short_side / min(w, h)
                    if f < 1:
                        im.draft("RGB", (int(w * f) + 1, int(h * f) + 1))
                im.load()
                return resize_short_side(to_rgb(im, path), short_side)
        except FileNotFoundError:
            pass  # read_image below raises the clear error
        except OSError:
            pass
    return resize_short_side(read_image(path), short_side)


class ImageCache:
    """Decoded images with short side ``short_side`` px, under ``root/s<short_side>/``.

    ``get(path)`` returns an RGB PIL image, building the entry on first use; ``prepare(paths)``
    builds missing entries up front (with progress; an interrupted prepare resumes where it was).
    """

    def __init__(self, root: str | Path, short_side: int = 256):
        if short_side < 8:
            raise DataError(f"cache short side {short_side}: must be at least 8 pixels")
        self.root = Path(root).expanduser()
        self.short_side = int(short_side)
        self.dir = self.root / f"s{self.short_side}"

    def key(self, path: str) -> str:
        """The entry name: hash of (absolute source path, size, mtime, short side)."""
        file = path.rpartition("#")[0] if ".npz#" in path else path
        try:
            st = os.stat(file)
        except FileNotFoundError as err:
            raise DataError(f"{file}: image file not found (needed for the cache); "
                            "was it moved after the data set was loaded?") from err
        # "|rgb2": entries from before 16-bit images were scaled (white) are not reused
        ident = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{self.short_side}|rgb2"
        return hashlib.sha1(ident.encode()).hexdigest()

    def entry(self, path: str) -> Path:
        k = self.key(path)
        return self.dir / k[:2] / f"{k}.npy"

    def get(self, path: str) -> Image.Image:
        """The cached, resized RGB image for ``path`` (built and stored if absent)."""
        return Image.fromarray(self.get_array(path))

    def get_array(self, path: str) -> np.ndarray:
        """As :meth:`get`, as a uint8 array H x W x 3."""
        entry = self.entry(path)
        try:
            return _load_entry(entry)
        except (FileNotFoundError, ValueError, EOFError, OSError):
            pass  # absent (or damaged: rebuilt)
        arr = np.asarray(_decode_small(path, self.short_side), dtype=np.uint8)
        self._write(entry, arr)
        return arr

    def prepare(self, paths: Iterable[str], workers: int = 2, progress: bool = True) -> int:
        """Build the entries of ``paths`` that are missing; returns how many were built."""
        todo = [p for p in dict.fromkeys(paths) if not self.entry(p).is_file()]
        if not todo:
            return 0

        def build(p: str) -> None:
            self._write(self.entry(p), np.asarray(_decode_small(p, self.short_side), dtype=np.uint8))

        with ThreadPoolExecutor(max(1, workers)) as pool:
            for _ in progress_bar(pool.map(build, todo), total=len(todo),
                                  desc=f"cache s{self.short_side}", disable=not progress):
                pass
        return len(todo)

    def _write(self, entry: Path, arr: np.ndarray) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
        atomic_write(entry, write, durable=False)  # a lost entry is rebuilt: no fsync needed
