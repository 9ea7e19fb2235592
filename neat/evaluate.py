"""Held-out evaluation on long streams: what each NEAT mechanism is worth, beside three baselines.

Every figure is measured in the same run on held-out data (files, topics and grid seeds unseen in
training), on streams of STREAM_CHUNKS chunks (8 KB) each with the state carried:
- bits per byte per task (prose, code; grid streams score bits per token) with the state carried, and
  with each mechanism taken away (neat.ablations): state reset every chunk (all but the image-span parse),
  memory output off, memory reset every chunk (no test-time learning across chunks), Transformer² Z = 0
  (the base weights) and each expert forced;
- image-token accuracy with the ascii map in the same chunk as the image, and in the previous chunk;
- bits on a long-range task, key-value recall across kilobytes (neat.data.recall_stream): the whole stream
  and its queried values alone (`recall_values`), under every condition (memory on / off / reset);
- baselines: unigram, an interpolated 6-gram count model (neat.ngram) built from the same training text,
  and plain causal byte transformers (neat.plain: the shipped one of NEAT's size, and any others given,
  e.g. one at NEAT's FLOPs per byte);
- each row's cost: forward FLOPs per byte (neat.flops) and training wall time where its checkpoint has it;
- the bars of the NEAT v2 issue, each with its value and whether it is met.

The text figures only need a `step(tokens, state) -> (logits, state)` function, so any exported artifact
can be scored with the same code as the reference model.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from neat.ablations import conditions, skipped
from neat.bits import cross_entropy_bits
from neat.config import BOI_ID, FIRST_CODE_ID, N_BYTES, NeatConfig
from neat.data import RECALL_HELDOUT_SEED, TaskStream, grid_stream, recall_stream, sample_windows, text_stream
from neat.eval_bars import bars, text_mean
from neat.flops import NGRAM_LOOKUPS_PER_BYTE, cost
from neat.model import NeatModel

Step = Callable[[torch.Tensor, Sequence[torch.Tensor]], tuple[torch.Tensor, Sequence[torch.Tensor]]]
STREAM_CHUNKS = 64     # chunks per held-out stream (8 KB at T = 128), the state carried across them
TEXT_STREAMS = 4       # held-out streams per task, spread evenly over the held-out corpus
IMAGE_SAMPLES = 48     # held-out 'draw' samples per placement (map in the same / the previous chunk)
DISPATCH_WINDOWS = 32  # held-out single-chunk windows per task
HELDOUT_GRID_SEED = 1000
NGRAM_ORDER = 6
TASKS = ("prose", "code", "grid", "recall")


def text_windows(cfg: NeatConfig, task: str, chunks: int = STREAM_CHUNKS, streams: int = TEXT_STREAMS) -> torch.Tensor:
    """(streams, chunks*T + 1) held-out tokens of one task, evenly spread over its held-out data."""
    data = text_stream(task, held_out=True).tokens
    length = chunks * cfg.chunk_len + 1
    if len(data) < length * streams:
        raise ValueError(f"held-out {task} text has {len(data)} bytes, fewer than {streams} streams of {length}")
    starts = np.linspace(0, len(data) - length, streams).astype(int)
    return torch.from_numpy(np.stack([data[s:s + length] for s in starts])).to(torch.int32)


def grid_windows(cfg: NeatConfig, codes: np.ndarray, chunks: int = STREAM_CHUNKS, streams: int = TEXT_STREAMS):
    """(streams, chunks*T + 1) held-out grid samples (both directions), each stream from its own seed."""
    length = chunks * cfg.chunk_len + 1
    rows = [grid_stream(cfg, codes, length // 30, HELDOUT_GRID_SEED + i).tokens[:length] for i in range(streams)]
    return torch.from_numpy(np.stack(rows)).to(torch.int32)


def recall_windows(cfg: NeatConfig, chunks: int = STREAM_CHUNKS, streams: int = TEXT_STREAMS):
    """(streams, chunks*T + 1) held-out key-value recall streams, each from its own seed, and the (streams,
    chunks*T) mask of the targets that are queried values."""
    length = chunks * cfg.chunk_len + 1
    rows = [recall_stream(length, RECALL_HELDOUT_SEED + i, held_out=True) for i in range(streams)]
    tokens = np.stack([r.tokens[:length] for r in rows])
    scored = np.stack([r.scored[1:length] for r in rows])
    return torch.from_numpy(tokens).to(torch.int32), torch.from_numpy(scored)


def stream_logits(step: Step, init_state, tokens: torch.Tensor, T: int, reset: Callable | None = None):
    """Logits for every position of a (B, n*T + 1) window, processed chunk by chunk: (B, n*T, V).
    `reset(state) -> state`, if given, is applied before every chunk (an ablation)."""
    state, outs = init_state, []
    for c in range((tokens.shape[1] - 1) // T):
        if reset is not None:
            state = reset(state)
        logits, state = step(tokens[:, c * T:(c + 1) * T], state)
        outs.append(logits.float())
    return torch.cat(outs, dim=1)


def unigram_bits_per_byte(train_bytes: np.ndarray, targets: torch.Tensor) -> float:
    counts = np.bincount(train_bytes[train_bytes < N_BYTES], minlength=N_BYTES).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[targets.numpy().ravel()].mean())


def ngram_bits_per_byte(model, windows: torch.Tensor) -> float:
    """The count model on the same streams: each stream scored from its start, like the neural models."""
    rows = windows.numpy()
    return float(np.mean([model.bits(row[1:], context=row[:1]).mean() for row in rows]))


def image_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    img = targets >= FIRST_CODE_ID
    pred = logits.argmax(-1)
    return float((pred[img] == targets[img].long()).float().mean()), int(img.sum())


def model_step(model, alpha: torch.Tensor | None = None) -> Step:
    def step(tokens, state):
        if alpha is None:
            logits, *new_state = model(tokens, *state)
        else:
            logits, *new_state = model(tokens, *state, alpha=alpha.expand(tokens.shape[0], -1))
        return logits, new_state

    return step


def task_bits(step: Step, init_state, windows: dict[str, torch.Tensor], T: int, reset=None,
              masks: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """task -> bits per token on its streams; for each task in `masks` also `<task>_values`: the bits on the
    masked targets alone (None where the streams are too short to hold any: recall needs about 2 KB)."""
    out = {}
    for task, w in windows.items():
        logits = stream_logits(step, init_state(w.shape[0]), w, T, reset)
        out[task] = cross_entropy_bits(logits, w[:, 1:])
        if masks and task in masks:
            m = masks[task]
            out[f"{task}_values"] = cross_entropy_bits(logits[m], w[:, 1:][m]) if m.any() else None
    return out


@torch.no_grad()
def score_conditions(model: NeatModel, windows: dict[str, torch.Tensor],
                     progress: Callable[[str], None] = lambda _: None,
                     masks: dict[str, torch.Tensor] | None = None) -> dict[str, dict[str, float]]:
    """condition -> task -> bits per token on that task's held-out streams; `progress` gets each condition."""
    T, table = model.cfg.chunk_len, {}
    for name, (ctx, alpha, reset) in conditions(model).items():
        progress(f"bits per byte, condition {name!r}")
        with ctx():
            table[name] = task_bits(model_step(model, alpha), model.init_state, windows, T, reset, masks)
    return table


@torch.no_grad()
def max_state_ratio(model: NeatModel, windows: torch.Tensor) -> tuple[float, bool]:
    """Largest |state| / bound over every chunk of the streams, and whether every logit stayed finite."""
    T, bounds = model.cfg.chunk_len, model.state_bounds()
    state, worst, finite = model.init_state(windows.shape[0]), 0.0, True
    for c in range((windows.shape[1] - 1) // T):
        logits, *state = model(windows[:, c * T:(c + 1) * T], *state)
        finite &= bool(torch.isfinite(logits).all())
        for name, s in zip(model.state_names, state):
            if name in bounds:
                worst = max(worst, float(s.abs().max()) / bounds[name])
    return worst, finite


def image_placement_windows(cfg: NeatConfig, codes: np.ndarray, placement: str) -> torch.Tensor:
    """(IMAGE_SAMPLES, 2T + 1) windows of held-out 'draw' samples preceded by other samples, cut so that the
    scored sample's image is in the second chunk and its map in the same chunk ('same') or the previous one
    ('previous'). Positions of every other sample's image codes are blanked from scoring by the caller."""
    T = cfg.chunk_len
    st = grid_stream(cfg, codes, IMAGE_SAMPLES + 40, HELDOUT_GRID_SEED + 500, directions=("draw",))
    rows, targets = [], []
    for s in st.starts[8:8 + IMAGE_SAMPLES]:
        boi = int(s) + int(np.argmax(st.tokens[s:] == BOI_ID))  # the sample's BOI
        # 'same': the sample starts 8 bytes into chunk 2; 'previous': its BOI is the 3rd token of chunk 2
        begin = int(s) - (T + 8) if placement == "same" else boi - (T + 2)
        row = st.tokens[begin:begin + 2 * T + 1].copy()
        keep = np.zeros(2 * T, bool)
        keep[boi - begin:boi - begin + cfg.image_tokens + 1] = True  # this sample's codes (targets)
        rows.append(row)
        targets.append(keep)
    return torch.from_numpy(np.stack(rows)).to(torch.int32), torch.from_numpy(np.stack(targets))


@torch.no_grad()
def image_accuracy_by_placement(model: NeatModel, codes: np.ndarray, majority: int) -> dict[str, float]:
    """Accuracy on the scored samples' codes per placement, and that of always predicting `majority`."""
    T, out = model.cfg.chunk_len, {}
    for placement in ("same", "previous"):
        win, keep = image_placement_windows(model.cfg, codes, placement)
        logits = stream_logits(model_step(model), model.init_state(win.shape[0]), win, T)
        targets = torch.where(keep, win[:, 1:], torch.zeros_like(win[:, 1:]))  # only the scored sample's codes
        out[placement], _ = image_accuracy(logits, targets)
        if placement == "same":
            out["majority"] = float((targets[targets >= FIRST_CODE_ID] == majority).float().mean())
    return out


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
def evaluate(model: NeatModel, plain=None, chunks: int = STREAM_CHUNKS,
             progress: Callable[[str], None] = lambda _: None) -> dict:
    """Every held-out figure of the reference model with its baselines and the bars, as a JSON-ready dict.
    `plain`: the baseline PlainModel, or a list of them (default: none), each a row named by its config;
    `chunks`: chunks per held-out stream; `progress` gets what is being measured, as it starts (progress)."""
    from neat.ngram import NGramModel

    cfg, T = model.cfg, model.cfg.chunk_len
    codes = model.codebook.codes.detach().numpy()
    windows = {t: text_windows(cfg, t, chunks) for t in ("prose", "code")}
    windows["grid"] = grid_windows(cfg, codes, chunks)
    windows["recall"], recall_mask = recall_windows(cfg, chunks)
    masks = {"recall": recall_mask}
    report: dict = {"model": cfg.name, "stream_chunks": chunks, "stream_bytes": chunks * T,
                    "streams_per_task": TEXT_STREAMS, **cost(model)}  # every condition: NEAT's graph, its cost
    report["mechanisms"] = {"memory": cfg.memory, "experts": list(cfg.experts)}
    report["conditions"] = score_conditions(model, windows, progress, masks)
    report["skipped_conditions"] = skipped(model)  # the ablations of mechanisms this model has not
    progress(f"baselines: unigram and {NGRAM_ORDER}-gram count model")

    train_text = np.concatenate([text_stream(t, held_out=False).tokens for t in ("prose", "code")])
    targets = torch.cat([windows["prose"][:, 1:], windows["code"][:, 1:]])
    ngram = NGramModel(train_text.astype(np.uint8), NGRAM_ORDER)
    by_task = {t: ngram_bits_per_byte(ngram, windows[t]) for t in ("prose", "code")}
    report["baselines"] = {
        "unigram": {"text": unigram_bits_per_byte(train_text, targets), "flops_per_byte": 0.0},
        "ngram": {**by_task, "text": text_mean(by_task), "order": NGRAM_ORDER, "flops_per_byte": 0.0,
                  "cost": NGRAM_LOOKUPS_PER_BYTE},
    }
    plains = [] if plain is None else list(plain) if isinstance(plain, (list, tuple)) else [plain]
    for i, p in enumerate(plains):
        name = p.cfg.name if p.cfg.name not in report["baselines"] else f"{p.cfg.name}_{i}"
        progress(f"baseline: the plain transformer {name!r}")
        by_task = task_bits(model_step(p), p.init_state, windows, T, masks=masks)
        report["baselines"][name] = {**by_task, "text": text_mean(by_task),
                                     "params": sum(q.numel() for q in p.parameters()), **cost(p)}
    report["bits_per_byte"] = text_mean(report["conditions"]["carried"])
    report["text"] = {t: {"bits_per_byte": report["conditions"]["carried"][t], "bytes": int(windows[t][:, 1:].numel())}
                      for t in ("prose", "code")}
    progress("state bounds, image accuracy, dispatch accuracy, patch size")
    report["max_state_over_bound"], report["finite"] = max_state_ratio(model, torch.cat(list(windows.values())))
    train_codes = grid_stream(cfg, codes, 1000, 1).tokens
    majority = int(np.bincount(train_codes[train_codes >= FIRST_CODE_ID]).argmax())
    report["image_accuracy"] = image_accuracy_by_placement(model, codes, majority)
    report["image_majority_accuracy"] = report["image_accuracy"].pop("majority")

    held = {t: text_stream(t, True) for t in ("prose", "code")}
    held["grid"] = grid_stream(cfg, codes, 200, HELDOUT_GRID_SEED + 100)
    report["dispatch_accuracy"], report["dispatch_majority_accuracy"] = (
        dispatch_accuracy(model, held) if cfg.experts else (None, None))  # no experts: no dispatch pass
    report["mean_patch_bytes"] = mean_patch_bytes(model, windows["prose"][:, :T])
    report["bars"] = bars(report)
    return report


@torch.no_grad()
def mean_patch_bytes(model: NeatModel, tokens: torch.Tensor) -> float:
    out = model.forward_detailed(tokens, model.init_state(tokens.shape[0]))
    return float(tokens.numel() / out["patch_starts"].sum())
