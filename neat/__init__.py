"""NEAT reference model (BLT patching, Titans memory, Transformer² SVF, MVoT image tokens)."""
from neat.config import NeatConfig, preset
from neat.model import NeatModel, STATE_NAMES

__version__ = "0.1.0"
__all__ = ["NeatConfig", "NeatModel", "STATE_NAMES", "preset", "__version__"]
