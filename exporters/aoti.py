"""AOTInductor packages for a CPU (`cpu`) or an NVIDIA GPU (`cuda`), compiled from the one capture."""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from exporters.capture import Captured, torch_noise_ignored
from exporters.errors import ConversionError
from exporters.target import Built, Execution, execute, versions
from exporters.target import Settings as TargetSettings


@dataclass
class Settings(TargetSettings):
    max_autotune: bool = False  # let Inductor benchmark kernel choices (slower build, sometimes faster code)


def cpu_isa() -> list[str]:
    """ISA extensions Inductor may emit code for on this CPU (a package needs them where it runs)."""
    from runtimes.profile import cpu_info

    return list(cpu_info()[1])


def build(cap: Captured, out: Path, device: str, max_autotune: bool) -> Built:
    import torch

    from exporters.capture import capture
    from runtimes.backends.cpu import FILE

    program = cap.program if device == "cpu" else capture(cap.spec, device=device)
    # kernels take the thread count given where they run (runtimes.threads), not the one torch had here:
    # without this, Inductor writes `num_threads(N)` into every parallel loop unless N == os.cpu_count()
    options = {"cpp.dynamic_threads": True} | ({"max_autotune": max_autotune} if max_autotune else {})
    try:
        with torch_noise_ignored():
            torch._inductor.aoti_compile_and_package(program, package_path=str(out / FILE),
                                                     inductor_configs=options)
    except Exception as exc:  # Inductor raises many kinds; all mean this program did not compile
        hint = ("; this was with --max-autotune, whose C++ GEMM templates fail on this model with torch 2.13 "
                "(benchmarks/NOTES.md): build without it") if max_autotune and device == "cpu" else ""
        raise ConversionError(f"AOTInductor could not compile {cap.spec.name} for {device}: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{hint}") from exc
    requirements = {"device": device, "os": platform.system().lower(), "arch": platform.machine(),
                    "torch": torch.__version__.split("+")[0]}
    if device == "cpu":
        requirements["cpu_isa"] = cpu_isa()
    else:
        major, minor = torch.cuda.get_device_capability()
        requirements["compute_capability"] = f"{major}.{minor}"
        requirements["cuda"] = torch.version.cuda
    return Built(toolchain=versions("torch"), requirements=requirements, settings={"max_autotune": max_autotune})


def runner(artifact_dir: Path, requirements: dict, device: str) -> Execution:
    return execute(device, artifact_dir, requirements, f"executed: AOTInductor package on {device.upper()}")
