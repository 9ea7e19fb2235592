"""Which sampling settings give the shipped model's best text: the measurement behind `neat run`'s defaults.

For each setting of a grid (greedy, and temperature x top-k), the eager reference generates samples after
held-out prompts (prose and code the model never trained on), with the runtimes' own sampler
(`runtimes.generate.sample`) and the model's decode step (`neat.step.DecodeStep`, all samples of a setting
as one batch). Each sample is scored by
- its bits per byte under the reference model (the model's own distribution, temperature 1, at every
  generated position): how plausible the model finds what it wrote; lower is more coherent, and pure
  greedy is the lowest;
- its repetition rate: the share of its 8-grams that already occurred earlier in the same sample; a loop
  ("to the string to the string ...") is near 1, real text well below.
The held-out continuation of the same prompts (what really follows them), stepped through the same model,
gives both figures for real text. Rule (`choose`): among the sampled settings whose mean repetition rate is
not above the real continuation's beyond noise (at most two standard errors of the setting's mean above it),
the one with the lowest bits per byte; i.e. as plausible to the model as possible without repeating itself
more than real text does. Lower temperatures and top-k buy plausibility with repetition; this stops where
the loops begin. Greedy is reported, never chosen (`--greedy` is for
reproducible output).

    python -m benchmarks.sampling --out benchmarks/results/sampling.json

The committed record is `benchmarks/results/sampling.json`; `runtimes.generate.RUN_DEFAULTS` must equal its
`chosen` (a test checks it).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

TEMPERATURES = (0.6, 0.8, 1.0)
TOP_KS = (0, 10, 40)
NGRAM = 8
PROMPT_BYTES = 64


def settings() -> list[dict]:
    """Greedy first, then every temperature x top-k."""
    return [{"temperature": 0.0, "top_k": 0}] + [{"temperature": t, "top_k": k} for t in TEMPERATURES for k in TOP_KS]


def key(setting: dict) -> str:
    return "greedy" if setting["temperature"] <= 0 else f"t={setting['temperature']:g} top_k={setting['top_k']}"


def repetition(ids, n: int = NGRAM) -> float:
    """Share of the n-grams of `ids` that already occurred earlier in it (0 for fewer than n + 1 ids)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if len(grams) < 2:
        return 0.0
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def choose(rows: list[dict], reference: dict) -> dict:
    """The sampled row (temperature > 0) with the lowest bits per byte among those that repeat no more than the
    reference (the real continuation) beyond noise: mean repetition at most the reference's plus two standard
    errors of the row's mean; if none, the least repetitive one."""
    sampled = [r for r in rows if r["temperature"] > 0]
    ok = [r for r in sampled if r["repetition"] <= reference["repetition"] + 2 * r["repetition_se"]]
    return min(ok, key=lambda r: r["bits_per_byte"]) if ok else min(sampled, key=lambda r: r["repetition"])


def prompts(n: int = PROMPT_BYTES, per_task: int = 2) -> list[tuple[str, list[int], list[int]]]:
    """(task, prompt ids, the held-out text that follows) from held-out prose and code, each starting at a
    line start spread through the split (deterministic)."""
    from neat.data import text_stream

    out = []
    for task in ("prose", "code"):
        toks = text_stream(task, held_out=True).tokens
        for j in range(per_task):
            at = int(len(toks) * (j + 1) / (per_task + 2))
            while toks[at - 1] != 10:  # the next line start
                at += 1
            out.append((task, [int(b) for b in toks[at:at + n]], [int(b) for b in toks[at + n:at + n + 4096]]))
    return out


def _bits(logits, chosen) -> np.ndarray:
    """-log2 p(chosen) per row under softmax(logits) (B, V)."""
    import torch

    logp = torch.log_softmax(logits.double(), dim=-1)
    return (-logp[torch.arange(len(chosen)), torch.as_tensor(chosen)] / np.log(2)).numpy()


def measure(n_bytes: int = 200, seeds: int = 4, model=None) -> dict:
    """Generate n_bytes per prompt and seed for every setting; the record with per-setting means and the
    chosen setting."""
    import torch

    from neat.checkpoint import load_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a decode step is too little work to split (see runtimes/threads.py)
    try:
        return _measure(n_bytes, seeds, (model or load_checkpoint()).eval())
    finally:
        torch.set_num_threads(threads)


def _measure(n_bytes: int, seeds: int, model) -> dict:
    import torch

    from neat.config import EOS_ID
    from neat.step import DecodeStep
    from runtimes.generate import sample

    step = DecodeStep(model).eval()
    ps = prompts()
    rows_in = [(task, p, cont, s) for task, p, cont in ps for s in range(seeds)]
    B = len(rows_in)
    t0 = time.perf_counter()
    with torch.no_grad():
        state = step.step_state(B)
        prompt = torch.tensor([r[1] for r in rows_in], dtype=torch.int32)
        for t in range(prompt.shape[1]):
            logits, *state = step(prompt[:, t:t + 1], *state)
        after_prompt = (logits[:, -1].clone(), tuple(s.clone() for s in state))

        def run(pick) -> tuple[list[list[int]], list[list[float]]]:
            logits, state = after_prompt
            ids, bits = [[] for _ in range(B)], [[] for _ in range(B)]
            for i in range(n_bytes):
                nxt = [pick(b, logits[b].numpy()) for b in range(B)]
                for b, (v, x) in enumerate(zip(nxt, _bits(logits, nxt))):
                    ids[b].append(v)
                    bits[b].append(float(x))
                if i + 1 < n_bytes:
                    out, *state = step(torch.tensor(nxt, dtype=torch.int32)[:, None], *state)
                    logits = out[:, -1]
            return ids, bits

        def scored(ids, bits) -> dict:
            cut = [x.index(EOS_ID) + 1 if EOS_ID in x else len(x) for x in ids]  # a sample ends at end-of-sequence
            ids = [x[:c] for x, c in zip(ids, cut)]
            bits = [x[:c] for x, c in zip(bits, cut)]
            reps = [repetition(x) for x in ids]
            return {"bits_per_byte": float(np.mean([np.mean(x) for x in bits])),
                    "repetition": float(np.mean(reps)),
                    "repetition_se": float(np.std(reps, ddof=1) / np.sqrt(len(reps))),
                    "ended_early": sum(c < n_bytes for c in cut),
                    "samples": [bytes(v for v in x if v < 256).decode("utf-8", "replace") for x in ids[::seeds]]}

        real = scored(*_teacher(run, rows_in, n_bytes))
        rows = []
        for s in settings():
            rngs = [np.random.default_rng(r[3]) for r in rows_in]
            ids, bits = run(lambda b, scores: sample(scores, s["temperature"], s["top_k"], rngs[b]))
            rows.append({"setting": key(s), **s, **scored(ids, bits)})
    best = choose(rows, real)
    return {"what": "sampling settings of the shipped model: bits per byte of each sample under the eager "
                    "reference and its repeated-8-gram share (benchmarks/sampling.py)",
            "rule": "among sampled settings whose mean repetition is at most the held-out continuation's plus two "
                    "standard errors of the setting's mean, the lowest bits per byte",
            "bytes_per_sample": n_bytes, "prompt_bytes": PROMPT_BYTES, "seeds": seeds,
            "prompts": [{"task": t, "text": bytes(p).decode("utf-8", "replace")} for t, p, _ in ps],
            "held_out_continuation": real, "settings": rows,
            "chosen": {"temperature": best["temperature"], "top_k": best["top_k"]},
            "seconds": round(time.perf_counter() - t0, 1)}


def _teacher(run, rows_in, n_bytes):
    """run() fed the real continuation (each row's next held-out bytes) instead of samples."""
    it = {b: iter(r[2][:n_bytes]) for b, r in enumerate(rows_in)}
    return run(lambda b, scores: next(it[b]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bytes", type=int, default=200, help="bytes per sample")
    ap.add_argument("--seeds", type=int, default=4, help="samples per prompt and setting")
    ap.add_argument("--out", type=Path, help="write the record as JSON")
    args = ap.parse_args(argv)
    import os

    record = measure(args.bytes, args.seeds)
    record["load_average"] = [round(x, 2) for x in os.getloadavg()]
    for r in [{"setting": "held-out text", **record["held_out_continuation"]}] + record["settings"]:
        print(f"{r['setting']:>18}  bits/byte {r['bits_per_byte']:.3f}  repetition {r['repetition']:.3f} "
              f"(se {r['repetition_se']:.3f})")
    print("chosen:", record["chosen"])
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
