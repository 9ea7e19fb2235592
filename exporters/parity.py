"""Parity figures between a reference tensor and an artifact's, shared by export verification and the benchmark."""
from __future__ import annotations

import numpy as np


def compare(ref: np.ndarray, got: np.ndarray, ignore_below: float | None = None, rows: bool = False,
            tie: float = 0.0) -> dict:
    """Figures of `got` against `ref` (same shape, float): max abs error, the error relative to the
    reference's scale (max abs / max(1, max |ref|)), cosine similarity, finiteness of both. Entries where the
    reference is at or below `ignore_below` (a declared mask) are left out. rows=True: the tensor is scores
    over its last dim: cosine is the minimum over rows and the argmax agreement is added, over the rows whose
    reference top-two margin exceeds `tie` x the scale (a near tie within the precision's error may go either
    way; "ties" counts the rows left out)."""
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    keep = np.ones(ref.shape, bool) if ignore_below is None else ref > ignore_below
    keep &= np.isfinite(ref)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where the reference is not finite
        diff = np.abs(ref - got)[keep]
    scale = max(1.0, float(np.abs(ref[keep]).max())) if diff.size else 1.0
    r, g = np.where(keep, ref, 0.0), np.where(keep, got, 0.0)
    r2, g2 = (r.reshape(-1, r.shape[-1]), g.reshape(-1, g.shape[-1])) if rows and r.ndim else (r.reshape(1, -1), g.reshape(1, -1))
    norms = np.linalg.norm(r2, axis=-1) * np.linalg.norm(g2, axis=-1)
    cos = np.where(norms > 0, (r2 * g2).sum(-1) / np.maximum(norms, 1e-300), (np.abs(r2 - g2).max(-1, initial=0) == 0) * 1.0)
    out = {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "error": float(diff.max()) / scale if diff.size else 0.0,
        "cosine": float(cos.min()) if cos.size else 1.0,
        "finite": bool(np.isfinite(got[keep]).all()),
        # NaN or inf in the reference falls outside `keep`: without this, a model that diverges passes
        "reference_finite": bool(np.isfinite(ref[ref > ignore_below] if ignore_below is not None else ref).all()),
    }
    if rows and r.ndim:
        masked_got = np.where(keep, got, -np.inf).reshape(r2.shape)
        masked_ref = np.where(keep, ref, -np.inf).reshape(r2.shape)
        top2 = np.sort(masked_ref, axis=-1)[:, -2:] if masked_ref.shape[-1] > 1 else np.zeros((len(r2), 2))
        with np.errstate(invalid="ignore"):  # -inf - -inf in a row that is all masked
            decided = ~((top2[:, 1] - top2[:, 0]) <= tie * scale)
        agree = masked_got.argmax(-1) == masked_ref.argmax(-1)
        out["argmax"] = float(agree[decided].mean()) if decided.any() else 1.0
        out["ties"] = int((~decided).sum())
    return out
