"""MVoT (arXiv 2501.07542): visual codebook, image tokens interleaved with text, modality masking,
and the token discrepancy loss.

An image is G x G cells of patch_px x patch_px grey pixels. Each cell is one image token: the id of
its nearest code in a learned codebook (k-means over the training images). In the token stream an
image is the fixed-size span BOI, G*G codes, EOI.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neat.config import BOI_ID, EOI_ID, FIRST_CODE_ID, NEG, NeatConfig


class VisualCodebook(nn.Module):
    """Image tokenizer (nearest code) and detokenizer (code -> patch pixels)."""

    def __init__(self, cfg: NeatConfig):
        super().__init__()
        self.cfg = cfg
        self.codes = nn.Parameter(torch.zeros(cfg.n_codes, cfg.code_dim), requires_grad=False)  # (K, dim)

    def image_to_patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, G*px, G*px) -> (B, G*G, px*px), row-major cells."""
        G, p = self.cfg.image_grid, self.cfg.patch_px
        B = images.shape[0]
        return images.reshape(B, G, p, G, p).permute(0, 1, 3, 2, 4).reshape(B, G * G, p * p)

    def patches_to_image(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, G*G, px*px) -> (B, G*px, G*px)"""
        G, p = self.cfg.image_grid, self.cfg.patch_px
        B = patches.shape[0]
        return patches.reshape(B, G, G, p, p).permute(0, 1, 3, 2, 4).reshape(B, G * p, G * p)

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., dim) -> (...) index of the nearest code: argmin |x|^2 + |e|^2 - 2 x e^T, float distances."""
        e = self.codes
        dist = x.pow(2).sum(-1, keepdim=True) + e.pow(2).sum(-1) - 2.0 * x @ e.T  # (..., K)
        return dist.argmin(-1)

    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W) images in [0, 1] -> (B, G*G) token ids (codes offset to their place in the vocabulary)."""
        return self.nearest(self.image_to_patches(images)) + FIRST_CODE_ID

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, G*G) token ids -> (B, H, W) images."""
        return self.patches_to_image(self.codes[tokens - FIRST_CODE_ID])


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 30, restarts: int = 6) -> np.ndarray:
    """k-means with k-means++ seeding, best of `restarts` runs by inertia; x (N, dim) -> centres (k, dim)."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        c = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None, :] - np.asarray(c)[None]) ** 2).sum(-1), axis=1)
            c.append(x[rng.choice(len(x), p=d2 / d2.sum())])
        c = np.asarray(c)
        for _ in range(iters):
            d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)  # (N, k)
            assign = d2.argmin(1)
            for j in range(k):
                if (assign == j).any():
                    c[j] = x[assign == j].mean(0)
        inertia = d2.min(1).sum()
        if inertia < best_inertia:
            best, best_inertia = c.copy(), inertia
    return best.astype(np.float32)


def discrepancy_loss(image_logits: torch.Tensor, target_codes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Token discrepancy loss: mean over image positions of sum_j D[c_true, j] * softmax(image logits)_j.

    image_logits (N, K) logits restricted to the code range; target_codes (N,) code index in [0, K);
    codes (K, dim) codebook, D = pairwise Euclidean distances between code vectors.
    """
    D = torch.cdist(codes, codes)  # (K, K)
    return (D[target_codes] * F.softmax(image_logits, dim=-1)).sum(-1).mean()


def image_progress(tokens: torch.Tensor, state: torch.Tensor, n_img: float) -> tuple[torch.Tensor, torch.Tensor]:
    """After each token: inside an image span (B, T) and image codes so far in the open span (B, T).

    tokens (B, T) int32; state (B, 2) = [inside, codes so far] before the chunk. Every span is
    BOI, n_img codes, EOI; earlier spans in the chunk closed after exactly n_img codes.
    """
    is_boi = (tokens == BOI_ID).to(state.dtype)
    is_eoi = (tokens == EOI_ID).to(state.dtype)
    is_code = (tokens >= FIRST_CODE_ID).to(state.dtype)
    inside = (state[:, :1] + _running(is_boi - is_eoi)).clamp(0.0, 1.0)
    n = state[:, 1:] + _running(is_code) - n_img * _running(is_eoi)
    return inside, n


def _running(x: torch.Tensor) -> torch.Tensor:
    """Running sum along dim 1; a decode step's single token is its own sum (no cumsum kernel per step)."""
    return x if x.shape[1] == 1 else torch.cumsum(x, dim=1)


class ImageCellEmbedding(nn.Module):
    """Embedding of which image cell comes next (0..G*G inside a span, one more value for text):
    the 2-D position of MVoT image tokens, so a code can be drawn from its cell's description."""

    def __init__(self, cfg: NeatConfig, dim: int):
        super().__init__()
        self.n_img = float(cfg.image_tokens)
        self.table = nn.Parameter(torch.zeros(cfg.image_tokens + 2, dim))
        self.register_buffer("slots", torch.arange(cfg.image_tokens + 2).float(), persistent=False)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        inside, n = image_progress(tokens, state, self.n_img)
        idx = inside * n + (1.0 - inside) * (self.n_img + 1.0)  # (B, T)
        return (idx[..., None] == self.slots).to(self.table.dtype) @ self.table  # (B, T, dim)


class ModalityMask(nn.Module):
    """Additive logit mask from the modality decision at every position.

    Outside an image only text tokens (bytes, specials but EOI) are allowed; inside an image with fewer
    than G*G codes so far only codes; after G*G codes only EOI. State (B, 2): [inside an image, codes so far].
    """

    def __init__(self, cfg: NeatConfig):
        super().__init__()
        V, n_img = cfg.vocab_size, cfg.image_tokens
        self.n_img = float(n_img)
        ids = torch.arange(V)
        self.register_buffer("text_ok", ((ids < FIRST_CODE_ID) & (ids != EOI_ID)).float(), persistent=False)
        self.register_buffer("code_ok", (ids >= FIRST_CODE_ID).float(), persistent=False)
        self.register_buffer("eoi_ok", (ids == EOI_ID).float(), persistent=False)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor):
        # tokens (B, T) int32; state (B, 2)
        inside, n = image_progress(tokens, state, self.n_img)  # (B, T), (B, T)
        full = (n >= self.n_img).to(n.dtype)
        allowed = (
            (1.0 - inside)[..., None] * self.text_ok
            + (inside * (1.0 - full))[..., None] * self.code_ok
            + (inside * full)[..., None] * self.eoi_ok
        )  # (B, T, V)
        # codes so far capped at one image (bounded however many codes an input puts in a span)
        new_state = torch.stack([inside[:, -1], (n[:, -1] * inside[:, -1]).clamp(0.0, self.n_img)], dim=-1)  # (B, 2)
        return (1.0 - allowed) * NEG, new_state
