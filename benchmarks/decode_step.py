"""Per-byte decode latency, eager, batch 1: the decode step (neat.step) against the recompute path
(one chunk forward per byte over the padded partial chunk, plus the commit forward when a chunk fills).

    python -m benchmarks.decode_step [--bytes N] [--threads N] [--out FILE]

All three paths decode the same held-out prose bytes after the same one-chunk prefill, in the same run:
`recompute`, `step_masked` (DecodeStep.forward: one static graph, the latent layers every byte, kept where a
patch completed) and `step_split` (needs_patch, then forward or the latent-free byte_step). Prints the JSON
record on the last line; compare only ratios from one run (the machine is shared).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.machine import describe, emit


def run_paths(n_bytes: int) -> dict:
    from neat.checkpoint import load_checkpoint
    from neat.config import PAD_ID
    from neat.data import text_stream
    from neat.step import DecodeStep

    model = load_checkpoint().eval()
    step = DecodeStep(model)
    T = model.cfg.chunk_len
    data = torch.as_tensor(text_stream("prose", held_out=True).tokens[: T + n_bytes], dtype=torch.int32)[None]
    with torch.inference_mode():
        _, *prefilled = model(data[:, :T], *model.init_state(1))
        stream = data[:, T:]

        def recompute() -> None:
            state, start = prefilled, 0
            for i in range(n_bytes):
                buf = stream[:, start : i + 1]
                padded = torch.cat([buf, torch.full((1, T - buf.shape[1]), PAD_ID, dtype=torch.int32)], 1)
                model(padded, *state)
                if buf.shape[1] == T:  # the chunk is full: commit it to the state
                    _, *state = model(buf, *state)
                    start = i + 1

        def masked() -> None:
            state = step.from_chunk_state(prefilled)
            for i in range(n_bytes):
                _, *state = step(stream[:, i : i + 1], *state)

        patches = []

        def split() -> None:
            state = step.from_chunk_state(prefilled)
            for i in range(n_bytes):
                tok = stream[:, i : i + 1]
                latent = bool(step.needs_patch(tok, *state).any())
                patches.append(latent)
                _, *state = (step if latent else step.byte_step)(tok, *state)

        record = {}
        for name, fn in (("recompute", recompute), ("step_masked", masked), ("step_split", split)):
            fn()  # warm-up pass
            t0 = time.perf_counter()
            fn()
            sec = (time.perf_counter() - t0) / n_bytes
            record[name] = {"ms_per_byte": sec * 1e3, "bytes_per_s": 1.0 / sec}
    record["patch_fraction"] = sum(patches[n_bytes:]) / n_bytes
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", type=int, default=256, help="bytes decoded per path (default 256)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine "
                        "spends most of a tiny matmul waiting for a second thread)")
    parser.add_argument("--out", type=Path, help="also write the JSON record to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = run_paths(args.bytes)
    record = {
        "benchmark": "decode_step", "batch": 1, "bytes": args.bytes, **paths,
        "speedup_masked": paths["recompute"]["ms_per_byte"] / paths["step_masked"]["ms_per_byte"],
        "speedup_split": paths["recompute"]["ms_per_byte"] / paths["step_split"]["ms_per_byte"],
        "machine": describe(),
    }
    for name in ("recompute", "step_masked", "step_split"):
        print(f"{name:12s} {paths[name]['ms_per_byte']:7.2f} ms/byte  {paths[name]['bytes_per_s']:7.1f} bytes/s")
    print(f"step over recompute: masked x{record['speedup_masked']:.2f}, split x{record['speedup_split']:.2f} "
          f"({paths['patch_fraction']:.0%} of bytes complete a patch)")
    emit(record, args.out)
    return record


if __name__ == "__main__":
    main()
