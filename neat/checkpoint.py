"""Checkpoints are safetensors files with the model config in the metadata. Nothing is ever unpickled."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


from neat.config import NeatConfig
from neat.errors import CheckpointError
from neat.model import NeatModel

FORMAT = "neat-checkpoint"
FORMAT_VERSION = "1"
SHIPPED = Path(__file__).parent / "weights" / "tiny.safetensors"
SHIPPED_PLAIN = Path(__file__).parent / "weights" / "plain.safetensors"  # the same-budget baseline
# the plain transformer at the shipped NEAT's FLOPs per byte, trained beside it for its wall time (issue 30)
SHIPPED_PLAIN_EQUAL_FLOPS = Path(__file__).parent / "weights" / "plain_equal_flops.safetensors"
SHIPPED_PLAINS = (SHIPPED_PLAIN, SHIPPED_PLAIN_EQUAL_FLOPS)  # `neat eval`'s baselines unless given others


def save_checkpoint(model: NeatModel, path: str | Path, info: dict | None = None) -> Path:
    """Write atomically: a temporary file beside the target, then rename."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.cfg.to_json(),
            "arch": getattr(model.cfg, "arch", "neat"),
            "info": json.dumps(info or {}, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is an ordinary shareable file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: pass the path of a .safetensors file written by `neat train`, "
            "or leave it out to use the shipped tiny model"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); re-export or retrain it") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a NEAT checkpoint (no '{FORMAT}' metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {meta.get('format_version')!r}; this NEAT reads {FORMAT_VERSION!r}"
        )
    return meta


def load_checkpoint(path: str | Path | None = None) -> NeatModel:
    """Build the model its metadata describes and load the weights, checking names, shapes and dtypes.
    A checkpoint of the plain baseline (`arch` "plain") gives a PlainModel."""
    from safetensors.torch import load_file

    from neat.plain import PlainConfig, PlainModel

    path = Path(path) if path is not None else SHIPPED
    meta = read_metadata(path)
    arch = meta.get("arch", "neat")
    if arch not in ("neat", "plain"):
        raise CheckpointError(f"{path} holds a {arch!r} model; this NEAT reads 'neat' and 'plain' checkpoints")
    try:
        cfg = (PlainConfig if arch == "plain" else NeatConfig).from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: the config in its metadata is not valid ({exc})") from None
    model = PlainModel(cfg) if arch == "plain" else NeatModel(cfg)
    expected = model.state_dict()
    tensors = load_file(str(path))
    problems = [f"missing {k}" for k in sorted(set(expected) - set(tensors))]
    problems += [f"unexpected {k}" for k in sorted(set(tensors) - set(expected))]
    for k in sorted(set(expected) & set(tensors)):
        want, got = expected[k], tensors[k]
        if want.shape != got.shape or want.dtype != got.dtype:
            problems.append(f"{k}: expected {want.dtype} {tuple(want.shape)}, found {got.dtype} {tuple(got.shape)}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(f"{path} does not match the {cfg.name} model its config describes: {shown}")
    model.load_state_dict(tensors, strict=True)
    model.train_info = json.loads(meta.get("info", "{}"))  # how it was trained (steps, train_seconds), for reports
    return model.eval()


def checkpoint_info(path: str | Path | None = None) -> dict:
    meta = read_metadata(Path(path) if path is not None else SHIPPED)
    return json.loads(meta.get("info", "{}"))
