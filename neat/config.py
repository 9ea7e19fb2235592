"""NeatConfig: every size of the NEAT reference model, with the named presets."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

# Token ids: 256 bytes, then the specials, then the image codes.
N_BYTES = 256
PAD_ID, BOS_ID, EOS_ID, BOI_ID, EOI_ID = 256, 257, 258, 259, 260
N_SPECIAL = 5
FIRST_CODE_ID = N_BYTES + N_SPECIAL

# Value added to a logit or an attention score to rule it out. Finite and fp16-safe (fp16 max 65504),
# so a row that is masked everywhere stays a uniform softmax instead of NaN.
NEG = -1.0e4


@dataclass(frozen=True)
class NeatConfig:
    """Sizes of the NEAT model. Defaults are the `tiny` preset."""

    name: str = "tiny"
    chunk_len: int = 128            # T: bytes per forward call
    n_codes: int = 16               # K: visual codebook size (image token ids follow the specials)
    code_dim: int = 16              # dimension of a code = pixels of one image patch (patch_px**2)
    patch_px: int = 4               # an image cell is patch_px x patch_px grey pixels
    image_grid: int = 4             # G: an image is G x G cells, G*G codes between BOI and EOI
    # BLT entropy model (small causal byte transformer, frozen after its own training stage)
    ent_dim: int = 64
    ent_layers: int = 2
    ent_heads: int = 2
    entropy_threshold: float = 2.0  # theta in nats; calibrated after the entropy model is trained
    # BLT patching and local models
    max_patches: int = 64           # P_max patch slots per chunk (each image token is its own patch)
    hash_ngrams: tuple[int, ...] = (3, 4)
    hash_rows: int = 2053           # rows per hash table (prime); int32 rolling hash mod this
    local_dim: int = 96
    local_heads: int = 4
    local_window: int = 32          # local byte attention looks back this many bytes, across chunk boundaries
    latent_window: int = 8          # latent attention also sees this many patches of the previous chunk
    # latent (global) transformer with Titans memory and Transformer² SVF MLPs
    memory: bool = True             # Titans neural memory in every latent layer; False: attention only, no memory state
    global_dim: int = 160
    global_layers: int = 2
    global_heads: int = 4
    mlp_mult: int = 3
    persistent_tokens: int = 4      # Titans persistent memory: learned tokens prepended to keys/values
    mem_dim: int = 48               # key/value size of the neural memory
    mem_hidden: int = 48            # hidden size of the two-layer residual memory M(k) = k + silu(k W1) W2
    mem_chunk: int = 8              # patch slots per memory update (weights fixed within one)
    mem_lr_max: float = 1.0         # upper bound of the data-dependent memory learning rate theta_t
    # Transformer² experts; empty: no Transformer² (plain latent MLPs, no dispatch pass, no dispatch state)
    experts: tuple[str, ...] = ("prose", "code", "grid")
    svf_max_mult: float = 2.0
    svf_factored: bool = False      # False while the base model trains; True after the SVD build step

    def __post_init__(self) -> None:
        if self.code_dim != self.patch_px**2:
            raise ValueError(f"code_dim ({self.code_dim}) must equal patch_px**2 ({self.patch_px**2})")
        if self.max_patches % self.mem_chunk:
            raise ValueError(f"max_patches ({self.max_patches}) must be a multiple of mem_chunk ({self.mem_chunk})")
        if self.local_window > self.chunk_len:
            raise ValueError(f"local_window ({self.local_window}) must be at most chunk_len ({self.chunk_len})")
        if self.local_dim % self.local_heads or self.global_dim % self.global_heads or self.ent_dim % self.ent_heads:
            raise ValueError("every model width must be divisible by its number of heads")
        if (self.local_dim // self.local_heads) % 2:  # rotary position embeddings rotate pairs of channels
            raise ValueError(f"local_dim / local_heads ({self.local_dim} / {self.local_heads}) must be even: "
                             "the byte layers' rotary embeddings rotate pairs of channels")
        if not isinstance(self.memory, bool):
            raise ValueError(f"memory must be True or False, not {self.memory!r}")
        if not isinstance(self.experts, tuple) or not all(isinstance(e, str) and e for e in self.experts):
            raise ValueError(f"experts must be a tuple of task names (empty: no Transformer²), not {self.experts!r}")
        if len(set(self.experts)) != len(self.experts):
            raise ValueError(f"experts {self.experts} name a task twice: give each expert its own task")
        if self.svf_factored and not self.experts:
            raise ValueError("svf_factored needs experts: a model without experts has plain MLPs, nothing to factor")

    @property
    def vocab_size(self) -> int:
        return FIRST_CODE_ID + self.n_codes

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    @property
    def image_tokens(self) -> int:
        return self.image_grid**2

    def replace(self, **changes) -> "NeatConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "NeatConfig":
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}: this checkpoint is from a newer NEAT")
        for key, value in raw.items():
            if isinstance(value, list):
                raw[key] = tuple(value)
        return cls(**raw)


PRESETS: dict[str, NeatConfig] = {
    "tiny": NeatConfig(),
    "small": NeatConfig(
        name="small", ent_dim=96, ent_layers=2, local_dim=192, local_heads=4,
        global_dim=384, global_layers=4, global_heads=6, mem_dim=64, mem_hidden=128, hash_rows=8191,
    ),
    # for tests and quick experiments: every mechanism and the same state layout (chunk, patch slots, memory
    # chunking, experts, image tokens) at a fraction of the width and depth (129k parameters against 1.8M)
    "micro": NeatConfig(
        name="micro", ent_dim=32, ent_layers=1, local_dim=32, local_heads=2,
        global_dim=32, global_layers=1, global_heads=2, mem_dim=16, mem_hidden=16, hash_rows=257,
    ),
}


# sizes `neat train --set` may change: widths, depths, heads and windows (not the state layout's chunking, the
# image format or the mechanisms, which have their own switches)
SIZE_FIELDS = ("ent_dim", "ent_layers", "ent_heads", "local_dim", "local_heads", "local_window", "latent_window",
               "global_dim", "global_layers", "global_heads", "mlp_mult", "mem_dim", "mem_hidden", "hash_rows")


def with_sizes(cfg: NeatConfig, pairs: tuple[str, ...]) -> NeatConfig:
    """`cfg` with sizes changed by "field=value" pairs (e.g. "local_dim=128"); a clear ValueError otherwise."""
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in SIZE_FIELDS:
            raise ValueError(f"cannot set {pair!r}: give FIELD=INTEGER with FIELD one of {', '.join(SIZE_FIELDS)}")
        try:
            changes[key] = int(value)
        except ValueError:
            raise ValueError(f"cannot set {pair!r}: {value!r} is not an integer") from None
        if changes[key] <= 0:
            raise ValueError(f"cannot set {pair!r}: sizes are positive integers")
    return cfg.replace(**changes)


def preset(name: str) -> NeatConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
