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
from dataclasses import asdict, dataclass, field

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
    libraries: dict = field(default_factory=dict)  # name -> version, for the ones that import and work

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


def _cpu() -> tuple[str, tuple[str, ...]]:
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


def _cuda_devices() -> tuple[CudaDevice, ...]:
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


def _libraries() -> dict:
    libs: dict = {}
    try:
        import torch

        libs["torch"] = torch.__version__.split("+")[0]
        import torch._inductor  # noqa: F401

        libs["aoti"] = libs["torch"]
    except ImportError:
        pass
    try:
        import onnxruntime as ort

        libs["onnxruntime"] = ort.__version__
        libs["onnxruntime_providers"] = list(ort.get_available_providers())
    except ImportError:
        pass
    for name in ("tensorrt", "tensorrt_rtx"):
        try:
            libs[name] = importlib.import_module(name).__version__
        except Exception:  # ImportError, or a CUDA library that fails to load
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
    cpu, isa = _cpu()
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
