"""The bars `neat eval` reports (issue 30's and NEAT v2's), each with its measured value and whether it is met,
from the figures `neat.evaluate.evaluate` measured."""
from __future__ import annotations


def text_mean(by_task: dict[str, float]) -> float:
    """Bits per byte over the text tasks, equal weight (every stream has the same length)."""
    return float((by_task["prose"] + by_task["code"]) / 2)


def trained(row: dict, sep: str = ", ") -> str:
    """A row's recorded training, "3,300 steps, 1,039 s" ("" where its checkpoint recorded neither)."""
    parts = [f"{row['train_steps']:,} steps" if "train_steps" in row else "",
             f"{row['train_seconds']:,.0f} s" if "train_seconds" in row else ""]
    return sep.join(p for p in parts if p)


def training(row: dict, neat: dict) -> str:
    """How a baseline row was trained, against NEAT's: ", 3,300 steps, 1,039 s of training (NEAT: 3,300 steps,
    860 s)", "" where its checkpoint recorded neither."""
    mine, theirs = trained(row), trained(neat)
    if not mine:
        return ""
    return f", {mine} of training" + (f" (NEAT: {theirs})" if theirs else "")


def bars(r: dict) -> list[dict]:
    """The NEAT v2 bars, each with its measured value and whether it is met."""
    c, base = r["conditions"], r["baselines"]
    neat = text_mean(c["carried"])
    out = [
        {"bar": "finite and bounded on the held-out streams (max |state| / bound <= 1)",
         "value": r["max_state_over_bound"], "met": r["finite"] and r["max_state_over_bound"] <= 1.0},
        {"bar": "text bits per byte >= 5% below the 6-gram", "value": neat / base["ngram"]["text"] - 1,
         "met": neat <= 0.95 * base["ngram"]["text"]},
        {"bar": "state carried >= 3% better than reset every chunk", "value": neat / text_mean(c["reset_every_chunk"]) - 1,
         "met": neat <= 0.97 * text_mean(c["reset_every_chunk"])},
        {"bar": "image-token accuracy >= 90%, map in the same chunk", "value": r["image_accuracy"]["same"],
         "met": r["image_accuracy"]["same"] >= 0.9},
        {"bar": "image-token accuracy >= 80%, map in the previous chunk", "value": r["image_accuracy"]["previous"],
         "met": r["image_accuracy"]["previous"] >= 0.8},
    ]
    if "plain" in base:
        out.insert(2, {"bar": "text bits per byte below the plain transformer's", "value": neat / base["plain"]["text"] - 1,
                       "met": neat < base["plain"]["text"]})
    equal = [n for n, b in base.items() if "params" in b and abs(b["flops_per_byte"] / r["flops_per_byte"] - 1) <= 0.1]
    for name in equal:  # BLT's claim: byte patching wins at equal compute
        out.insert(3, {"bar": f"text bits per byte at or below the plain transformer's at equal FLOPs per byte "
                              f"({name}{training(base[name], r)})",
                       "value": neat / base[name]["text"] - 1, "met": neat <= base[name]["text"]})
    mech = r.get("mechanisms", {})
    if mech.get("memory", True) is False:
        out.append({"bar": "long-range recall: memory on >= 2% better than memory off, or no memory",
                    "value": None, "note": "no memory", "met": True})
    elif c["carried"].get("recall_values") is not None:
        out.append({"bar": "long-range recall (queried values): memory on >= 2% better than memory off",
                    "value": c["carried"]["recall_values"] / c["memory_off"]["recall_values"] - 1,
                    "met": c["carried"]["recall_values"] <= 0.98 * c["memory_off"]["recall_values"]})
    if mech.get("experts") == []:
        out.append({"bar": "dispatch mix >= 1% better than Z = 0 on one task, or no experts",
                    "value": None, "note": "no experts", "met": True})
    elif "z_zero" in c:
        gains = {t: v / c["z_zero"][t] - 1 for t, v in c["carried"].items() if v is not None}
        best = min(gains, key=gains.get)
        out.append({"bar": f"dispatch mix >= 1% better than Z = 0 on one task (best: {best})",
                    "value": gains[best], "met": gains[best] <= -0.01})
    return out
