"""`neat eval`'s long-range task: held-out recall windows hold queried values, and their score is the
cross-entropy at exactly those positions, under the memory conditions `neat eval` compares."""
import math

import torch
import torch.nn.functional as F

from neat import NeatModel, preset
from neat.ablations import conditions
from neat.evaluate import model_step, recall_windows, stream_logits, task_bits


def test_recall_values_are_scored_at_the_queried_digits_only():
    torch.manual_seed(0)
    model = NeatModel(preset("micro")).eval()
    T = model.cfg.chunk_len
    tokens, mask = recall_windows(model.cfg, chunks=20, streams=2)
    assert tokens.shape == (2, 20 * T + 1) and mask.shape == (2, 20 * T)
    assert mask.sum() >= 2 * 8 * 4  # every stream reaches the queries of its first episode
    digits = tokens[:, 1:][mask]
    assert ((digits >= ord("0")) & (digits <= ord("9"))).all()
    ctx, alpha, reset = conditions(model)["memory_reset_every_chunk"]
    with torch.no_grad(), ctx():
        got = task_bits(model_step(model, alpha), model.init_state, {"recall": tokens}, T, reset, {"recall": mask})
        logits = stream_logits(model_step(model, alpha), model.init_state(2), tokens, T, reset)
    want = F.cross_entropy(logits[mask].double(), tokens[:, 1:][mask].long()) / math.log(2)
    assert abs(got["recall_values"] - float(want)) < 1e-9 and got["recall_values"] != got["recall"]
