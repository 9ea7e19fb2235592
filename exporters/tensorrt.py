"""Target `tensorrt`: a serialized TensorRT engine built from the ONNX graph by TensorRT's own ONNX parser.

Works with data-center `tensorrt` (builds for the GPU of this machine) and with TensorRT for RTX
(`tensorrt_rtx`, which builds ahead of time for named compute capabilities, also on a machine without a
GPU). Networks are strongly typed: precision comes from the ONNX types, so fp16 engines are built from
the fp16 ONNX graph. Each input gets an optimization profile over the batch bounds. With data-center
TensorRT the timing cache is saved beside the engine and in a per-user cache that the next build reuses;
TensorRT for RTX deprecated it (its kernels are compiled and cached at run time on the GPU).

An engine is executed only on a matching NVIDIA GPU; elsewhere it is "built, not executed" after a real
parse and build, with the ONNX artifact's parity standing for the graph.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from exporters.capture import Captured
from exporters.errors import ConversionError, TargetUnavailable
from exporters.target import Built, Execution
from exporters.target import Settings as TargetSettings
from runtimes.backends.tensorrt import FILE as ENGINE

NAME = "tensorrt"
PRECISIONS = ("fp32", "fp16")
TIMING_CACHE = "timing.cache"
FLAVOURS = ("tensorrt", "tensorrt_rtx")  # data-center first when both are installed
DEFAULT_RTX_CAPABILITIES = ("8.6", "8.9", "12.0")  # Ampere desktop, Ada, Blackwell desktop
WORKSPACE_BYTES = 1 << 30


@dataclass
class Settings(TargetSettings):
    compute_capabilities: tuple[str, ...] = ()  # TensorRT for RTX: targets like "8.6"; empty: the defaults
    opt_batch: int = 0                          # batch the engine is tuned for; 0: the profile's max
    timing_cache: str = ""                      # timing cache file to start from and update; "": the shared one


def flavour() -> tuple[object | None, str]:
    """(module, name) of the TensorRT builder that imports here, data-center first."""
    for name in FLAVOURS:
        try:
            return importlib.import_module(name), name
        except ImportError:
            continue
    return None, ""


def is_available() -> tuple[bool, str]:
    trt, name = flavour()
    if trt is None:
        return False, ('no TensorRT builder: pip install "neat-deploy[tensorrt-rtx]" (TensorRT for RTX builds '
                       "without a GPU), or install tensorrt on an NVIDIA GPU machine")
    from exporters.onnx import is_available as onnx_available

    ok, why = onnx_available()
    if not ok:
        return False, f"the TensorRT target builds from ONNX: {why}"
    if name == "tensorrt" and not _cuda_device():
        return False, "data-center TensorRT builds on an NVIDIA GPU and none is visible; build there"
    return True, f"{name} {trt.__version__}"


def _cuda_device() -> tuple[int, int] | None:
    try:
        import torch

        return torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install must not break the CPU path
        return None


def _capabilities(trt, name: str, settings: Settings) -> list[str]:
    if name != "tensorrt_rtx":
        cc = _cuda_device()
        return [f"{cc[0]}.{cc[1]}"] if cc else []
    wanted = settings.compute_capabilities or DEFAULT_RTX_CAPABILITIES
    known = {c[2:]: c for c in dir(trt.ComputeCapability) if c.startswith("SM")}
    out = []
    for cc in wanted:
        key = cc.replace(".", "")
        if key not in known:
            choices = ", ".join(f"{k[:-1]}.{k[-1]}" for k in sorted(known, key=int))
            raise TargetUnavailable(f"TensorRT for RTX cannot build for compute capability {cc}; it builds for {choices}")
        out.append(f"{key[:-1]}.{key[-1]}")
    return out


def _check_precision(caps: list[str], precision: str) -> None:
    if precision == "fp32" and "7.5" in caps:
        raise TargetUnavailable("TensorRT for RTX has no fp32 matrix multiply on compute capability 7.5 (Turing): "
                                "export --precision fp16 for it, or leave 7.5 out of --compute-capability")


def shared_timing_cache(name: str, version: str) -> Path:
    """Where builds on this machine keep and reuse their timing cache (NEAT_CACHE_DIR overrides)."""
    root = Path(os.environ.get("NEAT_CACHE_DIR", Path.home() / ".cache" / "neat"))
    return root / "tensorrt" / f"{name}-{version}.timing-cache"


def _parse(trt, builder, logger, onnx_path: Path):
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [f"{parser.get_error(i).node_operator()}: {parser.get_error(i).desc()}" for i in range(parser.num_errors)]
        raise ConversionError("TensorRT's ONNX parser rejected the graph: " + "; ".join(errors[:3]))
    return network, parser


def export(cap: Captured, out: Path, settings: Settings) -> Built:
    from exporters.onnx import DEFAULT_OPSET, to_fp16, write_onnx

    trt, name = flavour()
    caps = _capabilities(trt, name, settings)
    _check_precision(caps, settings.precision)
    onnx_path = out / "model.onnx.tmp"
    write_onnx(cap, onnx_path, DEFAULT_OPSET)
    if settings.precision == "fp16":
        to_fp16(onnx_path, onnx_path, cap.spec.fp32_scopes)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.clear_flag(trt.BuilderFlag.TF32)  # on by default: fp32 engines would not be fp32
    if name == "tensorrt_rtx":
        config.num_compute_capabilities = len(caps)
        for i, cc in enumerate(caps):
            config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")), i)
    lo, hi = cap.spec.batch
    opt = min(max(settings.opt_batch or hi, lo), hi)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        rest = tuple(t.shape)[1:]
        profile.set_shape(t.name, (lo, *rest), (opt, *rest), (hi, *rest))
    config.add_optimization_profile(profile)
    cache, blob, shared = None, b"", None
    if name == "tensorrt":  # TensorRT for RTX deprecated the timing cache (a no-op that queries the GPU)
        shared = Path(settings.timing_cache) if settings.timing_cache else shared_timing_cache(name, trt.__version__)
        blob = shared.read_bytes() if shared.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    os.unlink(onnx_path)
    if plan is None:
        raise ConversionError(f"{name} could not build an engine for {cap.spec.name} (see the log above)")
    (out / ENGINE).write_bytes(bytes(plan))
    if cache is not None:
        serialized = bytes(cache.serialize())
        (out / TIMING_CACHE).write_bytes(serialized)
        shared.parent.mkdir(parents=True, exist_ok=True)
        shared.write_bytes(serialized)
    return Built(
        toolchain={"flavour": name, name: trt.__version__, "onnx_parser": str(trt.get_nv_onnx_parser_version())},
        requirements={"flavour": name, "tensorrt_version": trt.__version__, "compute_capabilities": caps,
                      "gpu": "NVIDIA"},
        settings={"compute_capabilities": caps, "batch_profile": [lo, opt, hi], "strongly_typed": True,
                  "timing_cache": ("reused" if blob else "created") if cache is not None else
                  "not used: TensorRT for RTX compiles kernels at run time and caches them there"},
    )


def runner(artifact_dir: Path, requirements: dict) -> Execution:
    from runtimes.backends import tensorrt as backend
    from runtimes.profile import detect

    profile = detect()
    why = backend.problem(requirements, profile)
    if why:
        return Execution(None, f"built, not executed: {why}; the ONNX artifact's parity stands for the graph",
                         "built, not executed")
    return Execution(backend.load(artifact_dir, requirements, profile),
                     f"executed: TensorRT on {profile.cuda[0].name}")
