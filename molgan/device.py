"""Where tensors live: device names, their resolution, and the hand-over of graphs to the CPU.

A device name is ``auto`` (CUDA when this machine has it, else the CPU), ``cpu``, ``cuda``,
``cuda:K`` or ``mps``. Models, optimiser states and random generators live on the chosen device;
RDKit works on the CPU, so sampled graphs cross over as compact integer tensors
(``graphs_to_host``).

The name check imports nothing heavy, so that the config can use it; torch is imported only to
resolve a name.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = "auto, cpu, cuda, cuda:K or mps"
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


class DeviceError(ValueError):
    """A device name that is not one of ``DEVICE_NAMES``, or a device this machine lacks."""


def check_device_name(name: str) -> str:
    """``name`` if it is a device name; DeviceError otherwise (availability is not checked)."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise DeviceError(f"{name!r} is not a device; use {DEVICE_NAMES}")
    return name


def resolve_device(name: str) -> torch.device:
    """The device ``name`` stands for on this machine; DeviceError naming it if it is not here."""
    import torch

    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{name!r} is not available: this machine has no CUDA device "
                              "(or torch was built without CUDA)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"{name!r} is not available: this machine has {count} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{name!r} is not available: this machine has no Apple MPS device")
    return device


def fast_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively on ``device``: a CUDA GPU that supports
    them, or a CPU with AVX512-BF16 or AMX instructions. Elsewhere they are emulated, slower than
    float32."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        # Private in torch 2.13; absent in another version means "not known to be fast".
        names = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        checks = [getattr(torch.cpu, name, None) for name in names]
        return any(check is not None and check() for check in checks)
    return False


def graphs_to_host(atoms: torch.Tensor, bonds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer graphs, atoms (B, N) and bonds (B, N, N), as uint8 on the CPU for RDKit.

    Narrowed to one byte an entry on their own device first, so a GPU hands over 1/8 of the
    int64 indices, in one copy each.
    """
    import torch

    return atoms.to(torch.uint8).cpu(), bonds.to(torch.uint8).cpu()
