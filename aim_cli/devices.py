"""Choose the torch device a run uses."""

from __future__ import annotations

import torch

from aim_cli.errors import AimError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """Map auto/cpu/cuda[:N]/mps to an available torch.device, or fail with a hint."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise AimError(f"unknown device '{name}'", f"use one of {', '.join(DEVICE_CHOICES)}")
    if base == "cuda" and not torch.cuda.is_available():
        raise AimError("device 'cuda' requested but no CUDA GPU is available", "use --device cpu or auto")
    if base == "mps" and not torch.backends.mps.is_available():
        raise AimError("device 'mps' requested but Apple MPS is not available", "use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AimError(f"invalid device '{name}'", "use e.g. cpu, cuda, cuda:1, mps") from None
