"""NEAT's description for the generic exporters: inputs, state, batch bounds, held-out data and its score."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from exporters.api import describe
from exporters.spec import ExportSpec
from neat.bits import cross_entropy_bits
from neat.checkpoint import SHIPPED, load_checkpoint
from neat.model import STATE_NAMES, NeatModel, count_parameters

MASK_BELOW = -5.0e3  # logits at or below this are vocabulary entries the modality mask rules out (NEG = -1e4)
DEFAULT_BATCH = (1, 4)
LONG_STREAM_CHUNKS = 64  # the verification stream: long enough that a diverging state shows (8 KB)
# entropy patching thresholds the entropy model's prediction: in fp16 (or int8) a boundary near theta flips
# and the whole patch layout (and every state after it) changes, so the entropy model, entropy() and the
# threshold stay fp32 (2 small layers). With the threshold alone kept fp32, random token chunks still flipped.
FP32_SCOPES = ("patch_starts(", "self.entropy(tokens)")


def _real_text(model: NeatModel):
    from neat.evaluate import text_windows

    def real_data(batch: int, chunks: int):
        T = model.cfg.chunk_len
        rows = torch.cat([text_windows(model.cfg, "prose", chunks), text_windows(model.cfg, "code", chunks)])
        rows = rows[torch.linspace(0, len(rows) - 1, batch).long()]
        return [(rows[:, c * T:(c + 1) * T].contiguous(),) for c in range(chunks)]

    return real_data


def bits_per_byte(chunks, logits_per_chunk) -> float:
    """Next-token bits per byte over a sequence of chunks (the last position has no target)."""
    tokens = torch.cat([c[0] for c in chunks], dim=1)  # (B, n*T)
    logits = np.concatenate(logits_per_chunk, axis=1)  # (B, n*T, V)
    return cross_entropy_bits(logits[:, :-1], tokens[:, 1:])


def token_layout(model: NeatModel) -> dict:
    """What a runtime needs to turn tokens into bytes and images without the model code."""
    from neat.config import BOI_ID, BOS_ID, EOI_ID, EOS_ID, FIRST_CODE_ID, PAD_ID

    cfg = model.cfg
    return {"bytes": 256, "pad": PAD_ID, "bos": BOS_ID, "eos": EOS_ID, "boi": BOI_ID, "eoi": EOI_ID,
            "first_code": FIRST_CODE_ID, "codes": cfg.n_codes, "image_grid": cfg.image_grid,
            "patch_px": cfg.patch_px, "codebook": model.codebook.codes.detach().tolist()}


def neat_spec(checkpoint: str | Path | None = None, batch: tuple[int, int] = DEFAULT_BATCH,
              model: NeatModel | None = None) -> ExportSpec:
    """The export description of a NEAT checkpoint (default: the shipped tiny model)."""
    path = Path(checkpoint) if checkpoint is not None else SHIPPED
    model_given = model is not None
    model = (model or load_checkpoint(path)).eval()
    cfg = model.cfg
    V, T = cfg.vocab_size, cfg.chunk_len
    tokens, *state = model.example_inputs(1)
    return describe(
        model, (tokens,), name=f"neat-{cfg.name}",
        state=dict(zip(STATE_NAMES, state)), init_state=model.init_state, batch=batch,
        output_names=("logits",), ranges={"tokens": (0, V), "context": (0, V)},
        ignore_below={"logits": MASK_BELOW}, argmax=("logits",),
        data=_real_text(model), score=bits_per_byte, long_stream_chunks=LONG_STREAM_CHUNKS,
        config=cfg.__dict__ | {"experts": list(cfg.experts), "hash_ngrams": list(cfg.hash_ngrams)},
        reference_file=None if model_given else path, reference_loader="neat",
        fp32_scopes=FP32_SCOPES,
        info={"params": count_parameters(model), "chunk_len": T, "vocab_size": V,
              "checkpoint": path.name, "experts": list(cfg.experts), "tokens": token_layout(model)},
    )
