"""Where models run and in which precision: one choice shared by train, evaluate and predict.

`device` is auto (CUDA when PyTorch sees a GPU, else the CPU), cpu or cuda. `precision` is auto,
fp32 or bf16: bf16 runs matrix products in bfloat16 under autocast, with weights, optimizer and
loss in float32. auto means bf16 on CUDA and, on a CPU with native bf16 instructions (AVX-512
BF16, AMX), bf16 for training (measured on the real sample: the CNN trains 1.3x faster with
validation and test balanced accuracy within 0.005 of float32, see README) and, for inference,
only for a bundle whose training found that bf16 left its validation balanced accuracy within
`BF16_TOLERANCE` of float32. Elsewhere auto means float32: emulated bf16 is slower.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from meli.errors import MeliError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
# The largest change of validation balanced accuracy that bf16 inference may make for auto to
# choose it on a CPU.
BF16_TOLERANCE = 0.001
CPU = torch.device("cpu")


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """The torch device for `choice`; with several processes on a machine, each takes its GPU."""
    if choice not in DEVICES:
        raise MeliError(f"unknown device {choice!r} (use one of {', '.join(DEVICES)})")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise MeliError("device cuda asked for, but PyTorch sees no CUDA GPU (a CPU-only "
                            "build, or no driver); use device auto or cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere it is emulated
    and slower than float32."""
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_bf16_training(precision: str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast."""
    return use_bf16(precision, device, validated_on_cpu=True)


def use_bf16(precision: str, device: torch.device, *, validated_on_cpu: bool = False) -> bool:
    """Whether inference runs under bf16 autocast. `validated_on_cpu`: the bundle's own check
    passed."""
    if precision not in PRECISIONS:
        raise MeliError(f"unknown precision {precision!r} (use one of {', '.join(PRECISIONS)})")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return validated_on_cpu and cpu_has_bf16()


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
