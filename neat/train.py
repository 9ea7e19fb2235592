"""Training from scratch, in three stages, with a fixed seed.

1. entropy: the BLT entropy model alone (next-token cross-entropy); then theta is calibrated on text so
   that patches average TARGET_PATCH_BYTES bytes, and the entropy model is frozen.
2. base: everything else, on persistent streams (STREAM_CHUNKS chunks, 4 KB, each, restarted at staggered
   times) with the state carried from step to step and back-propagated through the last `chunks` chunks
   (truncated back-propagation), so the memory is trained in the regime it meets over thousands of bytes:
   cross-entropy + MVoT token discrepancy loss at image positions + dispatch cross-entropy.
3. experts: the Transformer² build step (SVD of the latent MLPs), then only the expert vectors Z are
   trained, each on its own task through a caller-given one-hot mix. Skipped for a model without experts
   (`TrainSettings.experts` False: cfg.experts empty); `memory` False trains one without the Titans memory.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from neat.bits import to_bits
from neat.config import FIRST_CODE_ID, NeatConfig, preset, with_sizes
from neat.data import (RECALL_HELDOUT_SEED, RECALL_TRAIN_SEED, TaskStream, grid_stream, learn_codebook, recall_stream,
                       sample_windows, text_stream)
from neat.model import NeatModel
from neat.mvot import discrepancy_loss

TARGET_PATCH_BYTES = 4.5
DISCREPANCY_WEIGHT = 0.5
DISPATCH_WEIGHT = 0.2
GRID_TRAIN_SAMPLES = 6000
GRID_TRAIN_SEED, GRID_HELDOUT_SEED = 1, 2
RECALL_TRAIN_BYTES = 4_000_000  # key-value recall episodes generated for training (--extra-task recall)
STREAM_CHUNKS = 32    # chunks per training stream before it restarts (state reset) somewhere else
OPTIMIZER = "adamw-fused"  # recorded in every checkpoint (the shipped one predates it: for-loop AdamW, no record)
BASE_TASKS = ("prose", "code", "grid")  # what a model without experts trains on (with experts: the experts' tasks)


@dataclass
class TrainSettings:
    """Every knob of `neat train`; the defaults train the shipped tiny checkpoint."""

    preset: str = "tiny"          # model size (see neat.config.PRESETS)
    seed: int = 0                 # fixes data sampling and initialisation
    arch: str = "neat"            # "neat", or "plain": the same-budget causal byte transformer baseline
    entropy_steps: int = 1000     # stage 1 optimizer steps
    base_steps: int = 3000        # stage 2 optimizer steps
    expert_steps: int = 300       # stage 3 optimizer steps
    batch: int = 8                # streams per step (row i carries task i mod n_tasks)
    chunks: int = 2               # chunks per step and stream: the truncated back-propagation window
    lr: float = 2e-3              # peak AdamW learning rate (warm-up, then cosine decay)
    threads: int = 0              # torch CPU threads; 0 keeps torch's default
    plain_size: str = "plain"     # arch "plain": which baseline (neat.plain.PLAIN_PRESETS)
    extra_tasks: tuple[str, ...] = ()  # tasks no expert owns, read beside the experts' in stage 2 ("recall")
    memory: bool = True           # False: no Titans memory (no memory weights, no memory state)
    experts: bool = True          # False: no Transformer² (plain latent MLPs, no dispatch; stage 3 skipped)
    sizes: tuple[str, ...] = ()   # "field=value" size changes to the preset (neat.config.SIZE_FIELDS)


def model_config(s: TrainSettings) -> NeatConfig:
    """The config `train` builds: the preset with the settings' sizes, less the mechanisms they turn off. A
    ValueError names what cannot be built (also sizes given to the plain baseline, sized by `plain_size`)."""
    if s.arch == "plain" and s.sizes:
        raise ValueError(f"sizes {list(s.sizes)} change NEAT's preset, not the plain baseline: size it with "
                         "--plain-size (plain or plain_equal_flops)")
    cfg = with_sizes(preset(s.preset), s.sizes)
    return cfg.replace(memory=cfg.memory and s.memory, experts=cfg.experts if s.experts else ())


Report = Callable[[str, int, int, dict], None]  # (stage, step, total, figures)


def build_streams(cfg: NeatConfig, codes: np.ndarray, held_out: bool, extra: tuple[str, ...] = ()) -> dict[str, TaskStream]:
    seed = GRID_HELDOUT_SEED if held_out else GRID_TRAIN_SEED
    n = GRID_TRAIN_SAMPLES // (8 if held_out else 1)
    streams = {
        "prose": text_stream("prose", held_out),
        "code": text_stream("code", held_out),
        "grid": grid_stream(cfg, codes, n, seed),
    }
    for task in extra:
        if task != "recall":
            raise ValueError(f"unknown extra task {task!r}: the only one is 'recall'")
        streams[task] = recall_stream(RECALL_TRAIN_BYTES // (8 if held_out else 1),
                                      RECALL_HELDOUT_SEED if held_out else RECALL_TRAIN_SEED, held_out)
    return streams


class StreamBatch:
    """`batch` persistent streams, row i on task tasks[i % K]. Each `next(n)` returns the next n chunks
    (+1 target token) of every row, which rows started a new stream (their state must be reset) and each row's
    dispatch label (its task's index in `experts`, default `tasks`; -1 for a task no expert owns).
    Streams last STREAM_CHUNKS chunks; their first lengths are staggered so resets are spread over steps."""

    def __init__(self, streams, tasks, rng, batch: int, chunk_len: int, stream_chunks: int = STREAM_CHUNKS,
                 experts=None):
        self.streams, self.rng, self.T, self.stream_chunks = streams, rng, chunk_len, stream_chunks
        experts = list(tasks if experts is None else experts)
        self.tasks = [tasks[i % len(tasks)] for i in range(batch)]
        self.labels = torch.tensor([experts.index(t) if t in experts else -1 for t in self.tasks])  # (batch,)
        self.pos = [0] * batch
        self.left = [-(i * stream_chunks // batch) for i in range(batch)]  # <= 0: start (staggered) now

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, fresh = [], []
        for i, task in enumerate(self.tasks):
            st = self.streams[task]
            fresh.append(self.left[i] < n)
            if fresh[-1]:
                length = self.stream_chunks + (self.left[i] // n) * n if self.left[i] < 0 else self.stream_chunks
                ok = st.starts[st.starts + self.stream_chunks * self.T + 1 <= len(st.tokens)]
                self.pos[i], self.left[i] = int(self.rng.choice(ok)), max(length, n)
            p = self.pos[i]
            rows.append(st.tokens[p:p + n * self.T + 1])
            self.pos[i] += n * self.T
            self.left[i] -= n
        tokens = torch.from_numpy(np.stack(rows)).to(torch.int32)
        return tokens, torch.tensor(fresh), self.labels


def carry_state(state, init, fresh: torch.Tensor):
    """The state carried into the next step: detached (truncated back-propagation), rows in `fresh` reset."""
    return tuple(torch.where(fresh.view(-1, *[1] * (s.dim() - 1)), i, s.detach()) for s, i in zip(state, init))


def _batch(streams, experts, rng, batch, length):
    """Equal share of every task; returns tokens (B, length) int32 and task labels (B,)."""
    labels = np.arange(batch) % len(experts)
    rows = [sample_windows(streams[experts[i]], rng, 1, length)[0] for i in labels]
    return torch.from_numpy(np.stack(rows)).to(torch.int32), torch.from_numpy(labels)


def _lr(step: int, total: int, peak: float) -> float:
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm))))


def sequence_loss(model: NeatModel, tokens: torch.Tensor, labels: torch.Tensor, alpha=None, state=None):
    """Loss of a (B, n*T + 1) window processed chunk by chunk with the state carried from `state`
    (default: a fresh one). Returns (loss, figures, final state)."""
    T = model.cfg.chunk_len
    state = model.init_state(tokens.shape[0]) if state is None else state
    ce_sum = disc_sum = disp_sum = 0.0
    n_chunks = (tokens.shape[1] - 1) // T
    for c in range(n_chunks):
        x, y = tokens[:, c * T:(c + 1) * T], tokens[:, c * T + 1:(c + 1) * T + 1].long()
        out = model.forward_detailed(x, state, alpha)
        state = out["state"]
        logits = out["logits"]
        ce_sum = ce_sum + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        img = y >= FIRST_CODE_ID
        if "valid" not in out:  # the plain baseline: cross-entropy only
            continue
        if img.any():
            img_logits = logits[img][:, FIRST_CODE_ID:]
            disc_sum = disc_sum + discrepancy_loss(img_logits, y[img] - FIRST_CODE_ID, model.codebook.codes)
        valid = out["valid"].bool()
        if out["dispatch_logits"] is None:  # no experts: no dispatch pass to train
            continue
        d_logits = out["dispatch_logits"][valid]
        d_labels = labels[:, None].expand_as(out["valid"])[valid]
        if (d_labels >= 0).any():  # rows of a task no expert owns (-1) are not in the dispatch loss
            disp_sum = disp_sum + F.cross_entropy(d_logits, d_labels, ignore_index=-1)
    ce, disc, disp = ce_sum / n_chunks, disc_sum / n_chunks, disp_sum / n_chunks
    loss = ce + DISCREPANCY_WEIGHT * disc + DISPATCH_WEIGHT * disp
    ce_value = float(ce.detach())
    return loss, {"loss": ce_value, "bpt": to_bits(ce_value)}, state


def _run_stage(name, params, steps, s: TrainSettings, loss_fn, report: Report | None):
    # fused: one kernel over every tensor; NEAT's 3.7 M hash-table weights made the for-loop form 14% of a step
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.01, betas=(0.9, 0.95), fused=True)
    t0, tokens_seen = time.perf_counter(), 0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, s.lr)
        loss, figures = loss_fn()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name} stage: loss is {loss.item()} at step {step}; lower --lr or change --seed")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        tokens_seen += figures.pop("tokens")
        if report:
            figures["tok/s"] = tokens_seen / (time.perf_counter() - t0)
            report(name, step + 1, steps, figures)


def _stream_loss(model: NeatModel, batches: StreamBatch, chunks: int, alpha=None):
    """A loss function for `_run_stage` that walks the persistent streams, carrying the state."""
    carried = [None]

    def loss_fn():
        tok, fresh, labels = batches.next(chunks)
        init = model.init_state(tok.shape[0])
        state = init if carried[0] is None else carry_state(carried[0], init, fresh)
        loss, fig, carried[0] = sequence_loss(model, tok, labels, alpha, state)
        return loss, {**fig, "tokens": tok.numel()}

    return loss_fn


def calibrate_threshold(model: NeatModel, streams, rng, n: int = 64) -> float:
    """theta such that text patches average TARGET_PATCH_BYTES bytes."""
    from neat.blt import entropy

    T = model.cfg.chunk_len
    with torch.no_grad():
        rows = [sample_windows(streams[t], rng, n // 2, T) for t in ("prose", "code")]
        H = entropy(model.entropy(torch.from_numpy(np.concatenate(rows)).to(torch.int32)))
    return float(torch.quantile(H[:, :-1].flatten(), 1.0 - 1.0 / TARGET_PATCH_BYTES))


def _recipe(s: TrainSettings, t_start: float) -> dict:
    """What every checkpoint records of its training, NEAT's or the plain baseline's."""
    return {"seed": s.seed, "batch": s.batch, "chunks": s.chunks, "lr": s.lr, "optimizer": OPTIMIZER,
            "stream_chunks": STREAM_CHUNKS, "extra_tasks": list(s.extra_tasks),
            "train_seconds": round(time.perf_counter() - t_start, 1)}


def train_plain(s: TrainSettings, report: Report | None = None):
    """The baseline: a plain causal byte transformer on the same streams, for the same number of bytes as
    NEAT's base and expert stages together (NEAT's entropy stage, 1/16 of that, is not given to it)."""
    from neat.plain import PlainModel, plain_preset

    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    cfg = preset(s.preset)
    t_start = time.perf_counter()
    streams = build_streams(cfg, learn_codebook(cfg, seed=s.seed), held_out=False, extra=s.extra_tasks)
    model = PlainModel(dataclasses.replace(plain_preset(s.plain_size), chunk_len=cfg.chunk_len))
    model.train()
    steps = s.base_steps + s.expert_steps
    tasks = (*cfg.experts, *s.extra_tasks)
    loss_fn = _stream_loss(model, StreamBatch(streams, tasks, rng, s.batch, cfg.chunk_len, experts=cfg.experts), s.chunks)
    _run_stage("plain", list(model.parameters()), steps, s, loss_fn, report)
    info = {"arch": "plain", "plain_size": s.plain_size, "steps": {"plain": steps}, **_recipe(s, t_start)}
    return model.eval(), info


def train(s: TrainSettings, report: Report | None = None) -> tuple[NeatModel, dict]:
    """Train a model from scratch; returns it with a record of what was done."""
    if s.threads:
        torch.set_num_threads(s.threads)
    model_config(s)  # what cannot be built fails here, before any data is
    if s.arch == "plain":
        return train_plain(s, report)
    if s.arch != "neat":
        raise ValueError(f"unknown architecture {s.arch!r}: choose neat or plain")
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    cfg = model_config(s)
    t_start = time.perf_counter()
    codes = learn_codebook(cfg, seed=s.seed)
    streams = build_streams(cfg, codes, held_out=False, extra=s.extra_tasks)
    model = NeatModel(cfg)
    model.codebook.codes.data = torch.from_numpy(codes)
    T, experts = cfg.chunk_len, cfg.experts
    base_tasks = experts or BASE_TASKS

    # stage 1: the entropy model
    def entropy_loss():
        tok, _ = _batch(streams, base_tasks, rng, s.batch * 2, T + 1)
        logits = model.entropy(tok[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok[:, 1:].long().reshape(-1))
        return loss, {"loss": loss.item(), "tokens": tok.numel()}

    model.train()
    _run_stage("entropy", list(model.entropy.parameters()), s.entropy_steps, s, entropy_loss, report)
    theta = calibrate_threshold(model, streams, rng)
    model.cfg = cfg = cfg.replace(entropy_threshold=theta)
    model.entropy.requires_grad_(False)

    # stage 2: the base model, on persistent streams
    tasks = (*base_tasks, *s.extra_tasks)
    base_loss = _stream_loss(model, StreamBatch(streams, tasks, rng, s.batch, T, experts=experts), s.chunks)

    base_params = [p for p in model.parameters() if p.requires_grad]
    _run_stage("base", base_params, s.base_steps, s, base_loss, report)

    expert_steps = s.expert_steps if experts else 0
    if experts:
        _train_experts(model, streams, rng, s, report)
    model.eval()
    info = {
        "preset": s.preset, "entropy_threshold": theta, "memory": cfg.memory, "experts": list(experts),
        "sizes": list(s.sizes),
        "steps": {"entropy": s.entropy_steps, "base": s.base_steps, "experts": expert_steps}, **_recipe(s, t_start),
    }
    return model, info


def _train_experts(model: NeatModel, streams, rng, s: TrainSettings, report: Report | None) -> None:
    """Stage 3: SVD build step, then the expert vectors on their own tasks."""
    T, experts = model.cfg.chunk_len, model.cfg.experts
    model.factor_svf()
    model.requires_grad_(False)
    z_params = []
    for layer in model.layers:
        for lin in (layer.mlp.up, layer.mlp.down):
            lin.Z.requires_grad_(True)
            z_params.append(lin.Z)

    onehot = F.one_hot(torch.arange(s.batch) % len(experts), len(experts)).float()  # training only
    expert_loss = _stream_loss(model, StreamBatch(streams, experts, rng, s.batch, T), s.chunks, onehot)

    _run_stage("experts", z_params, s.expert_steps, s, expert_loss, report)
