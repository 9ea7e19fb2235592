"""A short description of the machine a benchmark ran on, for its JSON record."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from runtimes.profile import cpu_info


def describe() -> dict:
    import torch

    return {
        "cpu": cpu_info()[0],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def emit(record: dict, out: Path | None) -> None:
    """Write the record to `out` (if given) and print it as JSON on the last line."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
