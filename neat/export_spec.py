"""NEAT's description for the generic exporters: inputs, state, batch bounds, held-out data and its score."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from exporters.api import describe
from exporters.spec import ExportSpec
from neat.bits import cross_entropy_bits
from neat.checkpoint import SHIPPED, load_checkpoint
from neat.entry import DECODE
from neat.model import NeatModel, count_parameters

MASK_BELOW = -5.0e3  # logits at or below this are vocabulary entries the modality mask rules out (NEG = -1e4)
DEFAULT_BATCH = (1, 4)
LONG_STREAM_CHUNKS = 64  # the verification stream: long enough that a diverging state shows (8 KB)
# entropy patching thresholds the entropy model's prediction: in fp16 (or int8) a boundary near theta flips
# and the whole patch layout (and every state after it) changes, so the entropy model, entropy() and the
# threshold stay fp32 (2 small layers). With the threshold alone kept fp32, random token chunks still flipped.
FP32_SCOPES = ("patch_starts(", "self.entropy(tokens)")
# the decode step's: its patch plan, its entropy model and the chunk restart (which passes the entropy cache
# through a select: in fp16 that rounding alone moved H next to theta and flipped a boundary); not step_enter's
STEP_FP32_SCOPES = ("self._plan(", "self._entropy(", "self._restart(")


def _real_text(model: NeatModel):
    from neat.evaluate import text_windows

    def real_data(batch: int, chunks: int):
        T = model.cfg.chunk_len
        rows = torch.cat([text_windows(model.cfg, "prose", chunks), text_windows(model.cfg, "code", chunks)])
        rows = rows[torch.linspace(0, len(rows) - 1, batch).long()]
        return [(rows[:, c * T:(c + 1) * T].contiguous(),) for c in range(chunks)]

    return real_data


def _real_bytes(real_data):
    """Real data one token per call (the decode step's inputs), from the chunk forward's real data."""
    def data(batch: int, calls: int):
        T = real_data(batch, 1)[0][0].shape[1]
        tokens = torch.cat([c[0] for c in real_data(batch, -(-calls // T))], dim=1)  # (B, >= calls)
        return [(tokens[:, i:i + 1].contiguous(),) for i in range(calls)]

    return data


def step_methods(model: NeatModel, batch: tuple[int, int], real_data) -> dict[str, ExportSpec]:
    """The decode step's entry points (neat.entry), each described for export; their roles are neat.entry.DECODE."""
    from neat.entry import Method, METHODS
    from neat.step import GATE_INPUTS, DecodeStep

    step = DecodeStep(model)
    V, T = model.cfg.vocab_size, model.cfg.chunk_len
    token = model.example_inputs(1)[0][:, :1]
    state = dict(zip(step.names, step.step_state(1)))
    stepping = dict(batch=batch, fp32_scopes=STEP_FP32_SCOPES, state=state, init_state=step.step_state,
                    input_names=("token",), output_names=("logits",), data=_real_bytes(real_data),
                    ranges={"token": (0, V), "context": (0, V)}, ignore_below={"logits": MASK_BELOW},
                    argmax=("logits",))
    return {
        "step_enter": describe(Method(step, METHODS["step_enter"]), tuple(model.init_state(1)), name="step_enter",
                               input_names=model.state_names, output_names=[f"step_{n}" for n in step.names],
                               ranges={"context": (0, V)}, batch=batch),
        # both steps within a chunk, where they are used, a quarter of one (the decode check in exporters.methods
        # steps the whole protocol through several chunks, every position and commit included: a long stream of
        # `step` alone to the chunk's end repeated that, at 127 steps per target)
        "step": describe(Method(step, METHODS["step"]), (token,), name="step", long_stream_chunks=T // 4, **stepping),
        "byte_step": describe(Method(step, METHODS["byte_step"]), (token,), name="byte_step",
                              long_stream_chunks=T // 4, **stepping),
        "step_commit": describe(Method(step, METHODS["step_commit"]), tuple(state.values()), name="step_commit",
                                input_names=step.names, output_names=[f"chunk_{n}" for n in model.state_names],
                                ranges={"context": (0, V)}, batch=batch),  # no decision inside: no fp32 scope
        "needs_patch": describe(Method(step, METHODS["needs_patch"]), (token, *(state[n] for n in GATE_INPUTS)),
                                name="needs_patch", input_names=("token", *GATE_INPUTS), output_names=("needs_patch",),
                                ranges={"token": (0, V), "context": (0, V)}, batch=batch,
                                fp32_scopes=STEP_FP32_SCOPES),
    }


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
    real = _real_text(model)
    decodes = getattr(cfg, "arch", "neat") == "neat"  # the plain baseline has no decode step
    return describe(
        model, (tokens,), name=f"neat-{cfg.name}",
        state=dict(zip(model.state_names, state)), init_state=model.init_state, batch=batch,
        output_names=("logits",), ranges={"tokens": (0, V), "context": (0, V)},
        ignore_below={"logits": MASK_BELOW}, argmax=("logits",),
        data=real, score=bits_per_byte, long_stream_chunks=LONG_STREAM_CHUNKS,
        config=cfg.__dict__ | {"experts": list(cfg.experts), "hash_ngrams": list(cfg.hash_ngrams)},
        reference_file=None if model_given else path, reference_loader="neat",
        fp32_scopes=FP32_SCOPES,
        methods=step_methods(model, batch, real) if decodes else {}, decode=dict(DECODE) if decodes else {},
        info={"params": count_parameters(model), "chunk_len": T, "vocab_size": V,
              "checkpoint": path.name, "experts": list(cfg.experts), "tokens": token_layout(model)},
    )
