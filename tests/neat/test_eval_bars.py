"""The equal-FLOPs bars name how each baseline was trained, against NEAT's own training."""
from neat.eval_bars import bars


def report(**baselines):
    by = {"prose": 2.0, "code": 2.2}
    return {"flops_per_byte": 1e6, "train_steps": 3300, "train_seconds": 860.0,
            "mechanisms": {"memory": False, "experts": []},
            "conditions": {"carried": by, "reset_every_chunk": {"prose": 2.3, "code": 2.4}},
            "baselines": {"ngram": {"text": 2.5, "flops_per_byte": 0.0}, **baselines}, "max_state_over_bound": 0.5,
            "finite": True, "image_accuracy": {"same": 0.9, "previous": 0.8}}


def test_equal_flops_bars_say_steps_and_seconds_of_each_side():
    r = report(plain_equal_flops={"text": 2.0, "params": 5, "flops_per_byte": 1.05e6, "train_steps": 2700,
                                  "train_seconds": 858.4},
               plain={"text": 1.9, "params": 9, "flops_per_byte": 2.8e6, "train_steps": 3300})
    (bar,) = [b for b in bars(r) if "equal FLOPs" in b["bar"]]  # 2.8x the FLOPs is not an equal-FLOPs row
    assert bar["bar"].endswith("(plain_equal_flops, 2,700 steps, 858 s of training (NEAT: 3,300 steps, 860 s))")
    assert bar["met"] is False and abs(bar["value"] - 0.05) < 1e-9  # NEAT 2.1 against 2.0


def test_a_row_without_a_training_record_is_named_alone():
    r = report(old={"text": 2.2, "params": 5, "flops_per_byte": 1e6})
    (bar,) = [b for b in bars(r) if "equal FLOPs" in b["bar"]]
    assert bar["bar"].endswith("per byte (old)") and bar["met"] is True
