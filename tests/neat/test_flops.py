"""FLOPs per byte (neat.flops): the counter agrees with the plain model's closed form, and the equal-compute
baseline really costs what NEAT tiny costs per byte while the shipped baseline costs about 2.8x."""
import dataclasses

import torch

from neat import NeatModel, preset
from neat.flops import flops_per_byte, forward_flops_per_chunk
from neat.plain import PLAIN_PRESETS, PlainConfig, PlainModel


def plain_closed_form(c: PlainConfig) -> int:
    """2 x multiply-adds of one chunk: every layer over context + chunk (q, k, v, o; MLP x4; scores and
    weighted values), then the head over the chunk."""
    n, d = c.context + c.chunk_len, c.dim
    layer = 4 * d * d * n * 2 + 2 * d * 4 * d * n * 2 + 2 * n * n * d * 2
    return c.layers * layer + c.chunk_len * d * c.vocab_size * 2


def test_counted_flops_of_the_plain_model_match_its_closed_form():
    for cfg in (PlainConfig(dim=32, layers=1, heads=2, context=16, chunk_len=32), PLAIN_PRESETS["plain"]):
        assert forward_flops_per_chunk(PlainModel(cfg)) == plain_closed_form(cfg)


def test_equal_flops_baseline_costs_what_neat_tiny_costs_per_byte():
    torch.manual_seed(0)
    neat = flops_per_byte(NeatModel(preset("tiny")).factor_svf())  # as shipped: the experts factored
    equal = flops_per_byte(PlainModel(PLAIN_PRESETS["plain_equal_flops"]))
    same_params = flops_per_byte(PlainModel(PLAIN_PRESETS["plain"]))
    assert abs(equal / neat - 1) < 0.02  # within 2% (the issue asks for 10%)
    assert 2.6 < same_params / neat < 3.0  # the shipped baseline: 2.8x
    eq = PLAIN_PRESETS["plain_equal_flops"]
    assert dataclasses.replace(eq, dim=184, name="plain") == PLAIN_PRESETS["plain"]  # only narrower
