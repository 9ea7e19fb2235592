"""Held-out evaluation: bits per byte, image-token accuracy, dispatch accuracy, each beside a baseline.

The text and image figures only need a `step(tokens, state) -> (logits, state)` function, so any
exported artifact can be scored with the same code as the reference model.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from neat.config import FIRST_CODE_ID, N_BYTES, NeatConfig
from neat.data import TaskStream, grid_stream, sample_windows, text_stream
from neat.model import NeatModel

Step = Callable[[torch.Tensor, Sequence[torch.Tensor]], tuple[torch.Tensor, Sequence[torch.Tensor]]]
TEXT_STREAMS = 8      # parallel held-out streams per text task
TEXT_CHUNKS = 8       # chunks per stream (state carried across them)
GRID_STREAMS = 8
GRID_CHUNKS = 4
DISPATCH_WINDOWS = 32  # held-out single-chunk windows per task
HELDOUT_GRID_SEED = 1000


def text_windows(cfg: NeatConfig, task: str) -> torch.Tensor:
    """(TEXT_STREAMS, TEXT_CHUNKS*T + 1) held-out text, evenly spread over the held-out corpus."""
    data = text_stream(task, held_out=True).tokens
    length = TEXT_CHUNKS * cfg.chunk_len + 1
    starts = np.linspace(0, len(data) - length, TEXT_STREAMS).astype(int)
    return torch.from_numpy(np.stack([data[s:s + length] for s in starts])).to(torch.int32)


def grid_windows(cfg: NeatConfig, codes: np.ndarray) -> torch.Tensor:
    """(GRID_STREAMS, GRID_CHUNKS*T + 1) held-out 'draw' samples (map text -> image), each from its own seed."""
    length = GRID_CHUNKS * cfg.chunk_len + 1
    rows = []
    for i in range(GRID_STREAMS):
        toks = grid_stream(cfg, codes, 3 * length // 40, HELDOUT_GRID_SEED + i, directions=("draw",)).tokens
        rows.append(toks[:length])
    return torch.from_numpy(np.stack(rows)).to(torch.int32)


def stream_logits(step: Step, init_state: Sequence[torch.Tensor], tokens: torch.Tensor, T: int) -> torch.Tensor:
    """Logits for every position of a (B, n*T + 1) window, processed chunk by chunk: (B, n*T, V)."""
    state, outs = init_state, []
    for c in range((tokens.shape[1] - 1) // T):
        logits, state = step(tokens[:, c * T:(c + 1) * T], state)
        outs.append(logits.float())
    return torch.cat(outs, dim=1)


def bits_per_byte(logits: torch.Tensor, targets: torch.Tensor) -> float:
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(), reduction="mean")
    return float(ce) / math.log(2)


def unigram_bits_per_byte(train_bytes: np.ndarray, targets: torch.Tensor) -> float:
    counts = np.bincount(train_bytes[train_bytes < N_BYTES], minlength=N_BYTES).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[targets.numpy().ravel()].mean())


def image_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    img = targets >= FIRST_CODE_ID
    pred = logits.argmax(-1)
    return float((pred[img] == targets[img].long()).float().mean()), int(img.sum())


@torch.no_grad()
def dispatch_accuracy(model: NeatModel, streams: dict[str, TaskStream], seed: int = 0) -> tuple[float, float]:
    """Accuracy of the dispatch pass at the last real patch of single held-out chunks; majority-class baseline."""
    rng = np.random.default_rng(seed)
    T, experts = model.cfg.chunk_len, model.cfg.experts
    tokens = torch.from_numpy(np.concatenate(
        [sample_windows(streams[t], rng, DISPATCH_WINDOWS, T) for t in experts])).to(torch.int32)
    labels = torch.arange(len(experts)).repeat_interleave(DISPATCH_WINDOWS)
    out = model.forward_detailed(tokens, model.init_state(tokens.shape[0]))
    last = out["valid"].sum(1).long() - 1
    pred = out["dispatch_logits"][torch.arange(len(labels)), last].argmax(-1)
    majority = float(torch.bincount(labels).max()) / len(labels)
    return float((pred == labels).float().mean()), majority


@torch.no_grad()
def evaluate(model: NeatModel) -> dict:
    """Every held-out figure of the reference model with its baseline, as a JSON-ready dict."""
    cfg, T = model.cfg, model.cfg.chunk_len
    codes = model.codebook.codes.detach().numpy()

    def step(tokens, state):
        logits, *new_state = model(tokens, *state)
        return logits, new_state

    report: dict = {"model": cfg.name, "text": {}}
    all_logits, all_targets, train_bytes = [], [], []
    for task in ("prose", "code"):
        win = text_windows(cfg, task)
        logits = stream_logits(step, model.init_state(win.shape[0]), win, T)
        targets = win[:, 1:]
        report["text"][task] = {"bits_per_byte": bits_per_byte(logits, targets), "bytes": targets.numel()}
        all_logits.append(logits)
        all_targets.append(targets)
        train_bytes.append(text_stream(task, held_out=False).tokens)
    targets = torch.cat(all_targets)
    report["bits_per_byte"] = bits_per_byte(torch.cat(all_logits), targets)
    report["unigram_bits_per_byte"] = unigram_bits_per_byte(np.concatenate(train_bytes), targets)

    win = grid_windows(cfg, codes)
    logits = stream_logits(step, model.init_state(win.shape[0]), win, T)
    report["image_token_accuracy"], report["image_tokens"] = image_accuracy(logits, win[:, 1:])
    train_codes = grid_stream(cfg, codes, 1000, 1).tokens
    train_codes = train_codes[train_codes >= FIRST_CODE_ID]
    report["image_majority_accuracy"] = float(
        (win[:, 1:][win[:, 1:] >= FIRST_CODE_ID] == int(np.bincount(train_codes).argmax())).float().mean())

    held = {t: text_stream(t, True) for t in ("prose", "code")}
    held["grid"] = grid_stream(cfg, codes, 200, HELDOUT_GRID_SEED + 100)
    report["dispatch_accuracy"], report["dispatch_majority_accuracy"] = dispatch_accuracy(model, held)
    report["mean_patch_bytes"] = mean_patch_bytes(model, text_windows(cfg, "prose")[:, :T])
    return report


@torch.no_grad()
def mean_patch_bytes(model: NeatModel, tokens: torch.Tensor) -> float:
    out = model.forward_detailed(tokens, model.init_state(tokens.shape[0]))
    return float(tokens.numel() / out["patch_starts"].sum())
