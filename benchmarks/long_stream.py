"""Stream a long input (default 1 MB) through the eager reference, chunk by chunk with the state carried,
and check that it stays finite and bounded and does not degrade along the stream.

    python -m benchmarks.long_stream [--checkpoint PATH] [--bytes N] [--dtype fp32|fp16] [--out FILE]

The stream is held-out text and grid samples, cycled: prose, code and grid in turns of up to 64 KB, each
ending where a sample may start. Reported:
bits per token for every 128 KB segment, the largest |state| / bound seen (`NeatModel.state_bounds`), whether
every logit was finite, the time per chunk. JSON record on the last line.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import describe, emit

TURN = 64 * 1024       # bytes of one task before the next one's turn
SEGMENT = 128 * 1024   # bits per token reported per segment of this many bytes


def stream_tokens(model, n_bytes: int) -> np.ndarray:
    from neat.data import grid_stream, text_stream
    from neat.evaluate import HELDOUT_GRID_SEED

    codes = model.codebook.codes.detach().numpy()
    sources = [text_stream("prose", True), text_stream("code", True),
               grid_stream(model.cfg, codes, 2000, HELDOUT_GRID_SEED + 7)]
    parts, offsets, total, turn = [], [0, 0, 0], 0, 0
    while total < n_bytes + 1:
        src, k = sources[turn % 3], turn % 3
        if offsets[k] + TURN > len(src.tokens):  # cycle this source
            offsets[k] = 0
        # a turn ends where a sample may start: an image span cut in half would leave the stream "inside an
        # image", where the modality mask rightly rules out every text byte that follows
        end = int(src.starts[src.starts <= offsets[k] + TURN].max())
        take = src.tokens[offsets[k]:end]
        offsets[k] = end
        parts.append(take)
        total += len(take)
        turn += 1
    return np.concatenate(parts)[:n_bytes + 1].astype(np.int32)


def measure(checkpoint: str | None, n_bytes: int, dtype: str) -> dict:
    from neat.bits import cross_entropy_bits
    from neat.checkpoint import SHIPPED, load_checkpoint

    model = load_checkpoint(checkpoint)
    dt = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
    model = model.to(dt)
    T, bounds = model.cfg.chunk_len, model.state_bounds()
    n_bytes -= n_bytes % T
    toks = torch.from_numpy(stream_tokens(model, n_bytes))[None]  # (1, n + 1)
    state = [s.to(dt) if s.is_floating_point() else s for s in model.init_state(1)]
    worst, finite, bits, segments, per_chunk = 0.0, True, 0.0, [], []
    with torch.inference_mode():
        for c in range(n_bytes // T):
            x, y = toks[:, c * T:(c + 1) * T], toks[:, c * T + 1:(c + 1) * T + 1].long()
            t0 = time.perf_counter()
            logits, *state = model(x, *state)
            per_chunk.append(time.perf_counter() - t0)
            finite &= bool(torch.isfinite(logits).all())
            for name, s in zip(model.state_names, state):
                if name in bounds:
                    worst = max(worst, float(s.float().abs().max()) / bounds[name])
            bits += cross_entropy_bits(logits[0], y[0], "sum")
            if ((c + 1) * T) % SEGMENT == 0:
                segments.append(bits / SEGMENT)
                bits = 0.0
    return {
        "benchmark": "long_stream", "model": model.cfg.name, "checkpoint": str(checkpoint or SHIPPED.name),
        "dtype": dtype, "bytes": n_bytes, "chunks": n_bytes // T, "finite": finite,
        "max_state_over_bound": worst, "bits_per_token_by_128KB": segments,
        "median_chunk_ms": float(np.median(per_chunk) * 1e3), "seconds": float(np.sum(per_chunk)),
        "machine": describe(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a .safetensors checkpoint (default: the shipped tiny model)")
    parser.add_argument("--bytes", type=int, default=1 << 20, help="bytes to stream (default 1 MB)")
    parser.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="model precision (default fp32)")
    parser.add_argument("--out", type=Path, help="also write the JSON record to this file")
    args = parser.parse_args(argv)
    r = measure(args.checkpoint, args.bytes, args.dtype)
    print(f"{r['bytes']:,} bytes ({r['chunks']} chunks, {r['dtype']}): finite {r['finite']}, "
          f"max |state|/bound {r['max_state_over_bound']:.3f}, {r['median_chunk_ms']:.2f} ms per chunk")
    print("bits per token per 128 KB: " + " ".join(f"{b:.3f}" for b in r["bits_per_token_by_128KB"]))
    emit(r, args.out)
    return r


if __name__ == "__main__":
    main()
