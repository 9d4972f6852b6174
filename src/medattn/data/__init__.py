"""Data: readers for the real on-disk layouts, leak-free splits, augmentation, a cache, synthetic sets.

Contract (``docs/architecture.md``): ``load_dataset``, ``load_task``/``Task``, ``make_split``,
``official_split``, ``kfold_split``, ``read_image``, ``build_transform``, ``ImageDataset``,
``ImageCache`` and ``synthetic``.
"""

from medattn.data import synthetic
from medattn.data.cache import ImageCache
from medattn.data.dataset import ImageDataset, read_image
from medattn.data.kfold import kfold_split
from medattn.data.labels import CAMELYON_CLASSES, SKIN_CLASSES
from medattn.data.load import READERS, Task, load_dataset, load_task, parse_spec
from medattn.data.splits import make_split, official_split
from medattn.data.table import fingerprint
from medattn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform

__all__ = [
    "CAMELYON_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "READERS", "SKIN_CLASSES", "ImageCache",
    "ImageDataset", "Task", "build_transform", "fingerprint", "load_dataset", "load_task",
    "kfold_split", "make_split", "official_split", "parse_spec", "read_image", "synthetic",
]
