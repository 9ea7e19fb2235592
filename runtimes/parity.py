"""Parity figures between a reference output and an artifact's, shared by export verification and the benchmark."""
from __future__ import annotations

import numpy as np

MASK_BELOW = -5.0e3  # logits at or below this in the reference are masked-out vocabulary entries


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    keep = ref > MASK_BELOW
    diff = np.abs(ref - got)[keep]
    r, g = np.where(keep, ref, 0.0), np.where(keep, got, 0.0)
    r2, g2 = r.reshape(-1, r.shape[-1]), g.reshape(-1, g.shape[-1])
    cos = (r2 * g2).sum(-1) / (np.linalg.norm(r2, axis=-1) * np.linalg.norm(g2, axis=-1) + 1e-30)
    masked_got = np.where(keep, got, -np.inf).reshape(r2.shape)
    masked_ref = np.where(keep, ref, -np.inf).reshape(r2.shape)
    return {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "max_rel": float((diff / (np.abs(ref[keep]) + 1e-3)).max()) if diff.size else 0.0,
        "cosine": float(cos.min()),
        "argmax": float((masked_got.argmax(-1) == masked_ref.argmax(-1)).mean()),
        "finite": bool(np.isfinite(got[keep]).all()),
        # NaN in the reference falls outside `keep`: without this, a model that diverges passes against itself
        "reference_finite": bool(np.isfinite(ref).all()),
    }
