"""Hardware detection: what this machine is and which runtime libraries actually work on it.

`detect()` runs once and is cached. NEAT_PROFILE=path/to/profile.json (as written by `neat info --json`)
overrides it, and so does passing a profile to `runtimes.load`. A profile is plain data: tests and
tools can construct one for any machine.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "fma", "f16c", "neon", "asimd")


@dataclass(frozen=True)
class CudaDevice:
    name: str
    compute_capability: str  # "8.6"
    memory_bytes: int


@dataclass(frozen=True)
class HardwareProfile:
    os: str                      # Linux, Darwin, Windows
    arch: str                    # x86_64, arm64, aarch64
    cpu: str
    isa: tuple[str, ...] = ()
    cores: int = 1
    memory_bytes: int = 0
    cuda: tuple[CudaDevice, ...] = ()
    apple_silicon: bool = False
    os_version: str = ""
    libraries: dict = field(default_factory=dict)  # name -> version (torch: installed; the others: import and work)

    @property
    def kind(self) -> str:
        """nvidia, apple or cpu: which preference order applies."""
        if self.cuda:
            return "nvidia"
        return "apple" if self.os == "Darwin" else "cpu"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "HardwareProfile":
        raw = dict(raw)
        raw["cuda"] = tuple(CudaDevice(**d) for d in raw.get("cuda", ()))
        raw["isa"] = tuple(raw.get("isa", ()))
        return cls(**raw)


def cpu_info() -> tuple[str, tuple[str, ...]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")):
                    flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    if platform.machine() in ("arm64", "aarch64"):
        flags.add("neon")
    return model, tuple(f for f in ISA_FLAGS if f in flags)


def _memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


BUILD_CUDA = re.compile(r"^cuda(?:\s*:[^=]+)?\s*=\s*(None|'[^']*'|\"[^\"]*\")", re.M)


def build_cuda(version_py: str) -> str | None | bool:
    """The CUDA version in the text of torch/version.py (None: a CPU-only build; True: not stated)."""
    found = BUILD_CUDA.search(version_py)
    if not found:
        return True
    return None if found.group(1) == "None" else found.group(1).strip("'\"")


def _torch_build_cuda() -> str | None | bool:
    """The CUDA version the installed torch was built with, read without importing torch (~1 s);
    None for a CPU-only build, False when torch is not installed, True when it cannot be told."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None:
        return False
    for root in spec.submodule_search_locations or []:
        try:
            return build_cuda((Path(root) / "version.py").read_text())
        except OSError:
            continue
    return True


def _cuda_devices() -> tuple[CudaDevice, ...]:
    """The GPUs PyTorch can use. A CPU-only torch build is recognised without importing torch, which keeps
    detection off the cold-start path of CPU machines; only a CUDA build is imported and asked."""
    if _torch_build_cuda() in (None, False):
        return ()
    try:
        import torch

        if not torch.cuda.is_available():
            return ()
        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append(CudaDevice(p.name, f"{p.major}.{p.minor}", int(p.total_memory)))
        return tuple(out)
    except Exception:  # a broken CUDA install must not break detection
        return ()


def _installed_version(module: str) -> str | None:
    """The installed version of a top-level module's distribution, without importing it."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:  # installed under another distribution name
        return getattr(importlib.import_module(module), "__version__", "unknown")


def _libraries() -> dict:
    libs: dict = {}
    torch_version = _installed_version("torch")  # read from the package metadata: importing torch costs ~1 s
    if torch_version:
        libs["torch"] = libs["aoti"] = torch_version.split("+")[0]  # AOTInductor ships inside torch
    try:
        import onnxruntime as ort

        libs["onnxruntime"] = ort.__version__
        libs["onnxruntime_providers"] = list(ort.get_available_providers())
    except ImportError:
        pass
    openvino = _installed_version("openvino")  # from the metadata: importing openvino costs ~0.5 s
    if openvino:
        libs["openvino"] = openvino
    executorch = _installed_version("executorch")  # from the metadata: importing it loads its kernels
    if executorch:
        libs["executorch"] = executorch.split("+")[0]
    for name in ("tensorrt", "tensorrt_rtx"):
        try:
            libs[name] = importlib.import_module(name).__version__
        except Exception:  # ImportError, or a CUDA library that fails to load
            pass
    try:
        import mlx.core as mx

        libs["mlx"] = mx.__version__
    except Exception:  # ImportError, or an MLX build that does not load here
        pass
    if platform.system() == "Darwin":
        try:
            import coremltools as ct

            libs["coremltools"] = ct.__version__
        except ImportError:
            pass
    return libs


@functools.lru_cache(maxsize=1)
def _detect() -> HardwareProfile:
    override = os.environ.get("NEAT_PROFILE")
    if override:
        return HardwareProfile.from_dict(json.loads(open(override).read()))
    cpu, isa = cpu_info()
    system = platform.system()
    return HardwareProfile(
        os=system, arch=platform.machine(), cpu=cpu, isa=isa, cores=os.cpu_count() or 1, memory_bytes=_memory(),
        cuda=_cuda_devices(), apple_silicon=system == "Darwin" and platform.machine() == "arm64",
        os_version=platform.mac_ver()[0] if system == "Darwin" else platform.release(), libraries=_libraries(),
    )


def detect(refresh: bool = False) -> HardwareProfile:
    """This machine's profile (cached; NEAT_PROFILE overrides; refresh=True detects again)."""
    if refresh:
        _detect.cache_clear()
    return _detect()
