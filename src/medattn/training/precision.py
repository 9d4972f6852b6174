"""Mixed precision and memory format of a training run: one object the engine and the benchmarks share.

``train.amp`` (see ``docs/training.md``):

* ``auto`` (default; also ``true``): on CUDA, autocast in bfloat16 where the GPU
  supports it, else float16 with a gradient scaler; on CPU, full float32.
* ``bf16`` / ``fp16``: autocast in that type on any device (CPU included; float16 always with a
  gradient scaler, since its range is too small for raw gradients).
* ``off`` (``false``): float32 everywhere.

``train.channels_last``: ``auto`` (default) on CUDA only, ``on`` (``true``) on any
device, ``off`` (``false``) never. Weights and every input batch then use the NHWC layout, which tensor cores
and oneDNN prefer; the attention layers keep whatever layout they receive.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from medattn.errors import ConfigError
from medattn.training.config import amp_mode, channels_last_mode

@dataclass(frozen=True)
class Precision:
    """How one run computes: ``dtype`` is the autocast type (None: float32), ``channels_last``
    the memory format of weights and inputs. Build it with :meth:`resolve`."""

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool

    @classmethod
    def resolve(cls, amp, channels_last, device: str | torch.device) -> Precision:
        """The precision ``train.amp``/``train.channels_last`` mean on ``device``."""
        device = torch.device(device)
        cuda = device.type == "cuda"
        mode = amp_mode(amp)
        if mode == "auto":
            mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
        elif mode == "bf16" and cuda and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"train.amp: bf16 is not supported by {torch.cuda.get_device_name(device)}; "
                              "use `fp16` or `auto`.")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]
        cl = channels_last_mode(channels_last)
        return cls(device, dtype, cl == "on" or (cl == "auto" and cuda))

    @property
    def name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``, plus ``+channels_last``."""
        dt = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        return dt + ("+channels_last" if self.channels_last else "")

    def autocast(self):
        """Context for forward passes (and the loss): autocast in ``dtype``, or nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for float16 only (bfloat16 has float32's range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device (and to channels-last); returns it."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch on the device, in the model's memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
