"""medattn.runs.tensorfile: safetensors files written by medattn itself through the atomic writer are
the library's files byte for byte (up to the metadata order, which is canonical here)."""

import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load, save

from medattn.runs.tensorfile import tensor_bytes, write_tensors


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "model.w": torch.randn(3, 4, generator=g), "model.b": torch.randn(4, generator=g),
        "steps": torch.tensor(7, dtype=torch.int64), "half": torch.randn(5, generator=g).half(),
        "bf": torch.randn(2, 3, generator=g).to(torch.bfloat16),
        "d": torch.randn(2, generator=g, dtype=torch.float64),
        "rng": torch.randint(0, 255, (9,), dtype=torch.uint8, generator=g),
        "mask": torch.tensor([True, False, True]), "i8": torch.tensor([-1, 2], dtype=torch.int8),
        "i16": torch.tensor([300], dtype=torch.int16), "i32": torch.tensor([1 << 20]).int(),
        "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5),
        "strided": torch.arange(12.0).reshape(3, 4).t(),  # not contiguous
    }


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}])
def test_the_bytes_are_the_librarys(metadata):
    tensors = _tensors()
    lib = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    assert tensor_bytes(tensors, metadata) == lib


def test_written_file_reads_back_with_sorted_metadata(tmp_path):
    tensors = _tensors()
    meta = {"z": "1", "a": "2", "state": json.dumps({"epoch": 3}), "é": "ü"}
    path = write_tensors(tmp_path / "x.safetensors", tensors, meta)
    raw = path.read_bytes()
    assert raw == tensor_bytes(tensors, meta)
    (n,) = struct.unpack("<Q", raw[:8])
    assert list(json.loads(raw[8:8 + n])["__metadata__"]) == ["a", "state", "z", "é"]
    back = load(raw)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == meta
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
    assert (path.stat().st_mode & 0o777) == 0o644


def test_other_dtypes_go_through_the_library_with_the_same_canonical_header(tmp_path):
    tensors = {"c": torch.tensor([1 + 2j], dtype=torch.complex64), "w": torch.ones(2)}
    meta = {"b": "1", "a": "2"}
    raw = write_tensors(tmp_path / "c.safetensors", tensors, meta).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert list(json.loads(raw[8:8 + n])["__metadata__"]) == ["a", "b"]
    assert torch.equal(load(raw)["c"], tensors["c"])
