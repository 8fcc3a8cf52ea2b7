"""What this machine runs fast: one place for the checks that pick a dtype."""

from __future__ import annotations

from typing import Literal

from gateway.config import WeightDtype


def bf16_native() -> bool:
    """Whether this machine runs bf16 at speed: a CUDA GPU, or a CPU oneDNN runs bf16 on (AVX512-BF16,
    AMX). Elsewhere bf16 on a CPU is emulated and slower than fp32."""
    import torch

    if torch.cuda.is_available():
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private op: absent from some builds
        return False


def resolve_dtype(dtype: WeightDtype) -> Literal["float32", "bfloat16"]:
    """`auto`: bf16 where the hardware runs it natively, fp32 elsewhere; an explicit dtype as it is."""
    if dtype == "auto":
        return "bfloat16" if bf16_native() else "float32"
    return dtype
