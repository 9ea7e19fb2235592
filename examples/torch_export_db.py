"""torch's own export examples (torch._export.db, the supported cases) through the one-call API, as a new user
would: no options, then once more following what a SpecError says to do (unbatched=, output_names=).

    python examples/torch_export_db.py exported,onnx,coreml

One line per case, then a tally. A crash (anything but an exporters.errors.ExportError) is counted as CRASH.
"""
import ast
import collections
import sys
import tempfile
import warnings

import torch
from torch._export.db.case import SupportLevel
from torch._export.db.examples import all_examples

import exporters
from exporters.errors import ExportError


def follow_advice(error: ExportError, opts: dict) -> bool:
    """Apply what the message says to do, as a user would; False when it asks for nothing we can give."""
    text = str(error)
    if "unbatched=" in text and "input(s) " in text:
        opts["unbatched"] = ast.literal_eval(text.split("input(s) ")[1].split("]")[0] + "]")
    elif "pass output_names=" in text:
        opts["output_names"] = [f"out_{i}" for i in range(int(text.split("with ")[1].split(" other")[0]))]
    else:
        return False
    return True


def main(targets: list[str]) -> None:
    warnings.filterwarnings("ignore")
    tally = collections.Counter()
    for name, case in sorted(all_examples().items()):
        if case.support_level != SupportLevel.SUPPORTED:
            continue
        model = case.model if isinstance(case.model, torch.nn.Module) else case.model()
        opts = {"example_kwargs": case.example_kwargs or None}
        try:
            for attempt in range(3):
                try:
                    exporters.describe(model, case.example_args, **opts)
                    break
                except ExportError as exc:
                    if attempt == 2 or not follow_advice(exc, opts):
                        raise
            tally["described"] += 1
            with tempfile.TemporaryDirectory() as d:
                result = exporters.export(model, case.example_args, targets=targets, out=f"{d}/b", check=False, **opts)
        except ExportError as exc:
            tally["typed error"] += 1
            print(f"{name}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        except Exception as exc:  # noqa: BLE001 - the point is to count them
            tally["CRASH"] += 1
            print(f"{name}: CRASH {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            continue
        for o in result.outcomes:
            tally[f"{o.target} {o.verdict}"] += 1
        advice = {k: v for k, v in opts.items() if k != "example_kwargs"}
        print(f"{name}{f' {advice}' if advice else ''}: " + ", ".join(
            f"{o.target} {o.verdict}" + (f" ({o.message[:160]})" if not o.ok else "") for o in result.outcomes),
            flush=True)
    print(dict(sorted(tally.items())))


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else ["exported", "onnx"])
