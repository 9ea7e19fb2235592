"""NEAT Deploy runtimes: detect the hardware, pick the best artifact of a bundle, run it.

    import runtimes
    session = runtimes.load("neat-bundle")       # best artifact for this machine, with fallback
    print(session.backend)                        # what was chosen, and why the others were not
    text = session.generate(b"def main(", max_new_bytes=80)

Importing this package needs none of the optional libraries (onnxruntime, coremltools, TensorRT).
"""
from runtimes.profile import CudaDevice, HardwareProfile, detect


def load(bundle, backend=None, profile=None, autotune=None, trust=None, threads=None):
    """See runtimes.pick.load (trust: runtimes.trust; threads: runtimes.threads)."""
    from runtimes.pick import load as _load

    return _load(bundle, backend=backend, profile=profile, autotune=autotune, trust=trust, threads=threads)


__all__ = ["CudaDevice", "HardwareProfile", "detect", "load"]
