"""Safetensors files written through the one atomic writer, byte for byte reproducible.

``safetensors.torch.save_file`` writes its own temporary file (``.tmpXXXXXX``, mode 0600) next to
the target and renames it; a process killed meanwhile leaves that file behind, outside the names
medattn's clean-up knows. So medattn serialises to bytes in memory (:func:`tensor_bytes`) and
writes those with :func:`medattn.atomic.write_text`: the only temporary file is medattn's own.

The library keeps the header's ``__metadata__`` in a hash map, so its key order changes from one
process to the next and two identical runs gave different files; :func:`tensor_bytes` rewrites
the header with the metadata keys sorted (the tensors' entries and data are left as they are).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from medattn.atomic import write_text

__all__ = ["tensor_bytes", "write_tensors"]


def tensor_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
                 ) -> bytes:
    """The safetensors file of ``tensors`` (contiguous CPU tensors, no shared storage) with
    ``metadata`` (str -> str), its header in a canonical order (metadata keys sorted)."""
    from safetensors.torch import save

    raw = save(dict(tensors), metadata=dict(metadata) if metadata else None)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text + raw[8 + n:]


def write_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                  metadata: Mapping[str, str] | None = None, *, durable: bool = True) -> Path:
    """Write ``tensors`` (and ``metadata``) as a safetensors file at ``path`` atomically (0644
    under the usual umask); a kill leaves at most medattn's own ``.*.tmp``. Returns ``path``."""
    return write_text(path, tensor_bytes(tensors, metadata), durable=durable)
