"""The NEAT reference model: BLT patching around a latent transformer with Titans memory and
Transformer² SVF MLPs, over a vocabulary of bytes, specials and MVoT image codes.

    forward(tokens, *state) -> (logits, *new_state)

tokens: int32 (B, T) with T = cfg.chunk_len. Everything carried across chunks is explicit state
(see STATE_NAMES and `state_spec`), so a long input is processed chunk by chunk in constant memory.
Across the chunk boundary the byte layers see the previous chunk's last `local_window` bytes and the
latent layers its last `latent_window` patches (carried windows), the decoder its last patch's output,
and the Titans memory everything before. Every float state stays within `state_bounds()` for any input.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neat.blt import EntropyModel, LocalDecoder, LocalEncoder, patch_assignment, patch_starts
from neat.config import NEG, PAD_ID, NeatConfig
from neat.errors import NeatError
from neat.layers import MLP, Attention, RMSNorm, carried_key_bias, carried_window_bias
from neat.mvot import ModalityMask, VisualCodebook
from neat.svf import DISPATCH_HORIZON, Dispatch, SVFMLP
from neat.titans import MOMENTUM_MAX, WEIGHT_MAX, NeuralMemory

# the chunk state of the default model (memory and experts on); a model's own is state_names(cfg)
STATE_NAMES = ("context", "seen", "prev_patch", "dispatch", "modality", "enc_window", "dec_window",
               "lat_window", "lat_valid", "mem_w1", "mem_w2", "mem_s1", "mem_s2")
MEMORY_STATE = ("mem_w1", "mem_w2", "mem_s1", "mem_s2")  # only with cfg.memory
EXPERT_STATE = ("dispatch",)  # only with cfg.experts


def present(names: tuple[str, ...], cfg: NeatConfig,
            expert_names: tuple[str, ...] = EXPERT_STATE) -> tuple[str, ...]:
    """`names` less those of the mechanisms this config leaves out (MEMORY_STATE, `expert_names`), in order."""
    absent = (() if cfg.memory else MEMORY_STATE) + (() if cfg.experts else expert_names)
    return tuple(n for n in names if n not in absent)


def state_names(cfg: NeatConfig) -> tuple[str, ...]:
    """The chunk state a model of this config carries, in order."""
    return present(STATE_NAMES, cfg)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # batch is dimension 0
    dtype: torch.dtype


def norm_bound(norm: RMSNorm) -> float:
    """Largest |output| of an RMSNorm: each normalised entry is at most sqrt(dim) in magnitude."""
    return float(norm.weight.shape[0] ** 0.5 * norm.weight.detach().abs().max())


class NoExpertsError(NeatError):
    """An expert mix or the SVF build step was asked of a model configured without Transformer² experts."""


class LatentLayer(nn.Module):
    """MAG block: causal attention over patch slots (with persistent tokens and the previous chunk's last
    patches) gated with the neural memory, then an SVF-adapted MLP. Without memory (cfg.memory False) the
    attention output is added alone; without experts (cfg.experts empty) the MLP is a plain one."""

    def __init__(self, cfg: NeatConfig):
        super().__init__()
        D = cfg.global_dim
        self.norm1, self.norm2 = RMSNorm(D), RMSNorm(D)
        self.persistent = nn.Parameter(torch.randn(cfg.persistent_tokens, D) * 0.02)
        self.carry_pos = nn.Parameter(torch.randn(cfg.latent_window, D) * 0.02)  # marks carried patches
        self.attn = Attention(D, D, D, cfg.global_heads)
        if cfg.memory:
            self.memory = NeuralMemory(cfg)
            self.gate = nn.Linear(D, D)
        self.mlp = SVFMLP(cfg) if cfg.experts else MLP(D, cfg.mlp_mult)

    def mlp_out(self, x, alpha):
        """The MLP on x (B, N, D): SVF-adapted by the expert mix alpha (B, N, K), or plain without experts."""
        return self.mlp(x, alpha) if alpha is not None else self.mlp(x)

    def forward(self, x, bias, valid, alpha, past, mem):
        # x (B, Pm, D); bias (B, 1, Pm, Np + R + Pm); valid (B, Pm); alpha (B, Pm, K) or None; past (B, R, D)
        # mem: this layer's memory state [w1, w2, s1, s2] (B, ...), or None without memory
        h = self.norm1(x)
        kv = torch.cat([self.persistent.expand(x.shape[0], -1, -1), past + self.carry_pos, h], dim=1)
        a = self.attn(h, kv, bias)
        if mem is None:
            x = x + a
        else:
            m, *mem = self.memory(h, valid, *mem)
            g = torch.sigmoid(self.gate(h))
            x = x + g * a + (1.0 - g) * m
        x = x + self.mlp_out(self.norm2(x), alpha)
        return x, h, mem  # h: the normalised patch states the next chunk may carry


class NeatModel(nn.Module):
    def __init__(self, cfg: NeatConfig):
        super().__init__()
        self.cfg = cfg
        Pm, D = cfg.max_patches, cfg.global_dim
        self.entropy = EntropyModel(cfg)
        self.encoder = LocalEncoder(cfg)
        if cfg.experts:
            self.dispatch = Dispatch(cfg)
        self.slot_pos = nn.Parameter(torch.randn(Pm, D) * 0.02)
        self.layers = nn.ModuleList(LatentLayer(cfg) for _ in range(cfg.global_layers))
        self.norm = RMSNorm(D)
        self.decoder = LocalDecoder(cfg)
        self.modality = ModalityMask(cfg)
        self.codebook = VisualCodebook(cfg)
        i = torch.arange(Pm)
        before = torch.zeros(Pm, cfg.persistent_tokens + cfg.latent_window)  # persistent and carried keys
        causal = torch.cat([before, (i[None, :] > i[:, None]).float() * NEG], 1)
        self.register_buffer("latent_causal", causal, persistent=False)  # (Pm, Np + R + Pm)
        self.register_buffer("byte_causal", carried_window_bias(cfg.chunk_len, cfg.local_window),
                             persistent=False)  # (T, W + T)

    # ----- state -------------------------------------------------------------------------------
    @property
    def state_names(self) -> tuple[str, ...]:
        """This model's chunk state, in order (state_names(cfg))."""
        return state_names(self.cfg)

    def state_spec(self) -> tuple[TensorSpec, ...]:
        c = self.cfg
        L, d, h = c.global_layers, c.mem_dim, c.mem_hidden
        W, R, D = c.local_window, c.latent_window, c.global_dim
        specs = (
            TensorSpec("context", (max(c.hash_ngrams) - 1,), torch.int32),  # last tokens, for hashes
            TensorSpec("seen", (1,), torch.float32),  # bytes seen so far, capped at local_window
            TensorSpec("prev_patch", (D,), torch.float32),  # global output of the last patch
            TensorSpec("dispatch", (D + 1,), torch.float32),  # running mean and count
            TensorSpec("modality", (2,), torch.float32),  # inside an image, codes so far
            TensorSpec("enc_window", (W, c.local_dim), torch.float32),  # encoder byte layer, last W bytes
            TensorSpec("dec_window", (W, c.local_dim), torch.float32),  # decoder byte layer, last W bytes
            TensorSpec("lat_window", (L, R, D), torch.float32),  # latent layers, last R patches
            TensorSpec("lat_valid", (R,), torch.float32),  # which carried patch slots are real
            TensorSpec("mem_w1", (L, d, h), torch.float32),
            TensorSpec("mem_w2", (L, h, d), torch.float32),
            TensorSpec("mem_s1", (L, d, h), torch.float32),
            TensorSpec("mem_s2", (L, h, d), torch.float32),
        )
        names = self.state_names
        return tuple(s for s in specs if s.name in names)

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """The state before the first chunk of every sequence."""
        dev = self.slot_pos.device
        spec = {s.name: s for s in self.state_spec()}

        def zeros(name: str) -> torch.Tensor:
            return torch.zeros((batch, *spec[name].shape), dtype=spec[name].dtype, device=dev)

        init = {name: zeros(name) for name in spec if name != "context"}
        init["context"] = torch.full((batch, *spec["context"].shape), PAD_ID, dtype=torch.int32, device=dev)
        if self.cfg.memory:
            for name in ("w1", "w2"):
                w = torch.stack([getattr(layer.memory, f"{name}_init") for layer in self.layers])  # (L, ., .)
                init[f"mem_{name}"] = w.detach().expand(batch, -1, -1, -1).clone()
        return tuple(init[name] for name in self.state_names)

    def state_bounds(self) -> dict[str, float]:
        """The largest magnitude each float state can take after any input of any length, by construction:
        windows and patch outputs are RMSNorm outputs, the dispatch state a mean of them and a capped count,
        the memory norm-clipped (neat.titans), the modality count capped at one image."""
        c = self.cfg
        bounds = {
            "seen": float(c.local_window),
            "prev_patch": norm_bound(self.norm),
            "modality": float(c.image_tokens),
            "enc_window": norm_bound(self.encoder.block.norm1),
            "dec_window": norm_bound(self.decoder.block.norm1),
            "lat_window": max(norm_bound(layer.norm1) for layer in self.layers),
            "lat_valid": 1.0,
        }
        if c.experts:
            bounds["dispatch"] = max(norm_bound(self.dispatch.norm), DISPATCH_HORIZON)
        if c.memory:
            bounds.update(mem_w1=WEIGHT_MAX, mem_w2=WEIGHT_MAX, mem_s1=MOMENTUM_MAX, mem_s2=MOMENTUM_MAX)
        return bounds

    # ----- forward -----------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, *state: torch.Tensor, alpha: torch.Tensor | None = None):
        """tokens int32 (B, T), *state as in self.state_names -> (logits (B, T, V), *new_state).

        alpha (B, K), optional: a caller-given expert mix that replaces the dispatch pass's own.
        """
        out = self.forward_detailed(tokens, state, alpha)
        return (out["logits"], *out["state"])

    def forward_detailed(self, tokens, state, alpha=None) -> dict:
        cfg = self.cfg
        S = dict(zip(self.state_names, state, strict=True))
        context, seen, prev_patch, mod_state = S["context"], S["seen"], S["prev_patch"], S["modality"]
        enc_win, dec_win, lat_win, lat_valid = S["enc_window"], S["dec_window"], S["lat_window"], S["lat_valid"]
        if alpha is not None and not cfg.experts:
            raise NoExpertsError(f"an expert mix was given to the {cfg.name} model, which has no experts "
                                 "(cfg.experts is empty): call it without alpha")
        T, W, R = cfg.chunk_len, cfg.local_window, cfg.latent_window
        byte_bias = self.byte_causal + carried_key_bias(seen, W, T)  # (B, 1, T, W + T)
        # BLT patching: entropy of the frozen entropy model -> boundaries -> one-hot assignment
        ent_logits = self.entropy(tokens)  # (B, T, V)
        b = patch_starts(ent_logits, tokens, context[:, -1:], cfg.entropy_threshold)  # (B, T)
        P, pid = patch_assignment(b, cfg.max_patches)  # (B, T, Pm), (B, T)
        P = P.to(self.slot_pos.dtype)  # the decision is fp32; masks follow the model's dtype (fp16 runs)
        valid = (P.sum(1) > 0).to(P.dtype)  # (B, Pm) patch_mask
        x, patches, new_context, new_enc = self.encoder(tokens, context, mod_state, P, enc_win, byte_bias)

        # Transformer² pass 1: dispatch -> expert mix per patch slot
        new = {}
        disp_logits = mix = None  # without experts: no dispatch pass, plain MLPs
        if cfg.experts:
            disp_logits, new["dispatch"] = self.dispatch(patches, valid, S["dispatch"])  # (B, Pm, K)
            mix = torch.softmax(disp_logits, dim=-1) if alpha is None else alpha[:, None, :].expand_as(disp_logits)

        # latent transformer over patch slots with Titans memory (pass 2 uses the mix)
        key_ok = torch.cat([torch.ones_like(valid[:, :1]).expand(-1, cfg.persistent_tokens), lat_valid, valid], 1)
        bias = (self.latent_causal + (1.0 - key_ok[:, None, :]) * NEG)[:, None]  # (B, 1, Pm, Np + R + Pm)
        # the last R real patches of [carried, this chunk's] (real slots are 0..n-1): a one-hot selection
        sel = last_real(valid.sum(1), R, cfg.max_patches).to(patches.dtype)  # (B, R, R + Pm)
        new_lat_valid = (sel @ torch.cat([lat_valid, valid], 1)[..., None])[..., 0]  # (B, R)
        h = patches + self.slot_pos
        new_mem, new_win = [], []
        for i, layer in enumerate(self.layers):
            past = lat_win[:, i]  # (B, R, D)
            mem = [S[n][:, i] for n in MEMORY_STATE] if cfg.memory else None
            h, normed, mem = layer(h, bias, valid, mix, past, mem)
            new_win.append(sel @ torch.cat([past, normed], 1))  # (B, R, D)
            new_mem.append(mem)
        h = self.norm(h)  # (B, Pm, D)
        if cfg.memory:
            new.update(zip(MEMORY_STATE, (torch.stack(t, dim=1) for t in zip(*new_mem))))

        # local decoder reads the previous patch's global output; the last real patch is carried over
        g_shift = torch.cat([prev_patch[:, None], h[:, :-1]], dim=1)  # (B, Pm, D)
        last = (torch.arange(cfg.max_patches, device=h.device) == (valid.sum(1, keepdim=True) - 1)).to(h.dtype)
        new_prev = (last[:, None, :] @ h)[:, 0]  # (B, D)
        logits, new_dec = self.decoder(x, g_shift, pid, dec_win, byte_bias)  # (B, T, V), (B, W, d)
        mask, new_mod = self.modality(tokens, mod_state)
        new.update(context=new_context, seen=(seen + T).clamp(max=float(W)), prev_patch=new_prev, modality=new_mod,
                   enc_window=new_enc, dec_window=new_dec, lat_window=torch.stack(new_win, dim=1),
                   lat_valid=new_lat_valid)
        return {
            "logits": logits + mask,
            "entropy_logits": ent_logits,
            "dispatch_logits": disp_logits,  # None without experts
            "patch_starts": b,
            "valid": valid,
            "state": tuple(new[name] for name in self.state_names),
        }

    @torch.no_grad()
    def forward_stream(self, tokens: torch.Tensor, state=None):
        """Process a long (B, N*T) input chunk by chunk, carrying the state. Yields (logits, state) per chunk;
        only one chunk's activations are alive at a time."""
        T = self.cfg.chunk_len
        if tokens.shape[1] % T:
            raise ValueError(f"stream length {tokens.shape[1]} is not a multiple of the chunk length {T}")
        state = self.init_state(tokens.shape[0]) if state is None else state
        for start in range(0, tokens.shape[1], T):
            logits, *state = self(tokens[:, start : start + T], *state)
            yield logits, tuple(state)

    def factor_svf(self) -> "NeatModel":
        """The Transformer² build step: SVD every latent MLP weight; the model then takes expert vectors."""
        if not self.cfg.experts:
            raise NoExpertsError(f"the {self.cfg.name} model has no experts (cfg.experts is empty), so there is "
                                 "no SVF build step: leave factor_svf out for it")
        for layer in self.layers:
            layer.mlp.up = layer.mlp.up.factor(self.cfg.n_experts)
            layer.mlp.down = layer.mlp.down.factor(self.cfg.n_experts)
        self.cfg = self.cfg.replace(svf_factored=True)
        return self

    def entry_point(self, name: str) -> nn.Module:
        """A module whose forward is entry point `name`: "forward" (this model) or a decode-step method
        (neat.entry.METHODS); how the eager backend runs a bundle's methods."""
        from neat.entry import entry_point

        return entry_point(self, name)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Valid random tokens (bytes only) and the initial state, for export and tests."""
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, 256, (batch, self.cfg.chunk_len), generator=g, dtype=torch.int32)
        return (tokens.to(self.slot_pos.device), *self.init_state(batch))


def last_real(n: torch.Tensor, R: int, Pm: int) -> torch.Tensor:
    """n (B,) real patch slots this chunk (slots 0..n-1) -> bool (B, R, R + Pm) one-hot selection of the
    last R entries of [R carried, Pm this chunk's]."""
    pos = torch.arange(R + Pm, device=n.device, dtype=n.dtype)
    return pos[None, None, :] == (n[:, None, None] + torch.arange(R, device=n.device, dtype=n.dtype)[:, None])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
