"""Cross-entropy in bits: the one definition of bits per byte (per token on grid streams) every score uses.

Training, `neat eval`, the exporters' held-out check, `neat bench` and the long-stream benchmark all score
next-token predictions this way, so their figures are comparable. Computed in float64 whatever the logits'
precision (fp16 artifacts included); logits and targets may be torch tensors or NumPy arrays.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_bits(nats: float) -> float:
    """A natural-log cross-entropy (what torch's losses return) in bits."""
    return nats / math.log(2)


def cross_entropy_bits(logits, targets, reduction: str = "mean") -> float:
    """Next-token cross-entropy of `logits` (..., V) against `targets` (...), in bits: the mean per target
    ('mean': bits per byte), or the total over all of them ('sum', to accumulate over chunks)."""
    z = torch.as_tensor(logits).double()
    nats = F.cross_entropy(z.reshape(-1, z.shape[-1]), torch.as_tensor(targets).reshape(-1).long(),
                           reduction=reduction)
    return to_bits(float(nats))
