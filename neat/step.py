"""The decode step: one byte in, next-byte logits out, with what the chunk forward would recompute carried
as fixed-size explicit state. `DecodeStep(model)` shares the weights of a `NeatModel`.

What the chunk forward computes for position t of a chunk (T = chunk_len, Pm = max_patches, C = mem_chunk):
- Entropy model: causal over chunk positions 0..t only (it restarts at every chunk, absolute learned
  positions); H_t = entropy of its prediction made at t.
- Boundary b_t = (H_{t-1} > theta) or t == 0 or token t is an image token or token t-1 was (t-1 of the
  previous chunk at t == 0); pid_t = min(b_0 + ... + b_t - 1, Pm - 1): the last slot absorbs any overflow.
- Encoder byte t: embeddings (token, position t, image cell from the modality counters after t, hashes of
  the last 4 tokens) -> windowed layer over the last W = local_window bytes, reaching into earlier chunks.
- Patch p's encoding pools and cross-attends over all of its bytes, so it is known once the patch is
  complete: when patch p + 1 starts, or at the chunk end (the next chunk always starts a patch).
- Latent layers at slot p: attention over persistent tokens, the previous chunk's last R = latent_window
  patches and slots 0..p; Titans retrieval with the memory weights from before p's memory chunk
  (slots C*floor(p/C)..); the memory updates once per memory chunk, when its last slot p = C*k + C - 1 is
  complete or at the chunk end (a partial chunk). The dispatch mix of slot p is the running mean of the
  dispatch-normed patch encodings up to p. So memory and dispatch move per patch, never per byte.
- Decoder byte t reads the final latent outputs of slots 0..pid_t - 1 and the previous chunk's last patch
  (slot 0 of g_shift), i.e. only complete patches; then a windowed layer and the head; the modality mask
  from the counters after t. Nothing at t depends on bytes after t: the model is causal.

So a step at byte t runs the entropy, encoder and decoder layers for one position, and the latent layers for
at most one slot: the patch that just completed. A chunk is committed lazily: after T steps the state is
*full* and the next step (or `chunk_state`) closes the last patch, applies the last memory update and
produces exactly the chunk state; the next step then starts a fresh chunk at t = 0.
Boundaries, two static forms: `forward` is one graph with masked arithmetic (torch.where on per-row flags):
every step runs one latent slot and one memory update and keeps them only where a patch completed.
`byte_step` is the same step without the latent layers, valid where `needs_patch(token, *state)` is false;
a runtime asks the flag and calls one of the two (split entry points). `patch_step` is `forward` without
the chunk restart, for a runtime that commits a full state itself (`commit`, then `from_chunk_state`: the
decode protocol's commit role), so the restart runs once per chunk instead of masked into every patch close. On the shipped model about a quarter
of text bytes complete a patch, and the split path is ~1.7-1.9x faster than the masked graph in eager
(benchmarks/decode_step.py). fp16 artifacts keep `_plan`, `_entropy` and `_restart` in fp32 (the source
fragments "self._plan(", "self._entropy(", "self._restart(" as fp32 scopes): the patch layout hangs on
H > theta, and a boundary flipped by rounding changes every state after it.
Every attention reads keys and values carried in the state (neat.step_cache), so a step projects one new
row per layer, never its cached inputs again; the normalised inputs stay only where the chunk commit or the
memory update needs them (windows, lat_cache). STEP_STATE_NAMES lists the state; shapes (per head: H heads
of hd = dim / H; keys of the byte windows before RoPE, applied per step):
    context (B, k) int32 last tokens            pos, npatch, ent_prev, seen (B, 1) position in the chunk,
    mod_raw (B, 2) unclamped image counters      boundaries so far, H_{t-1}, `seen` at the chunk start
    disp (B, D + 1) dispatch at the chunk start  disp_sum (B, D) sum of this chunk's normed encodings
    ent_k, ent_v (B, Le, He, T, de / He) entropy layers' keys/values of positions 0..t (the rest stale/zero)
    enc_window, dec_window (B, W, d) rolling normed inputs (for the chunk state)
    enc_k, enc_v, dec_k, dec_v (B, Hl, W, d / Hl) their keys (before RoPE) and values
    xbuf (B, T, d) encoder outputs, pidbuf (B, T) patch id of each byte (-1: none yet)
    pool_k, pool_v (B, Hg, T, D / Hg) the patch pooling's keys/values of those bytes (encoder.cross)
    gbuf (B, Pm + 1, D) slot 0: previous chunk's last patch output, slot s + 1: slot s's output
    read_k, read_v (B, Hl, Pm, d / Hl) the decoder's read keys/values of gbuf slots 0..Pm - 1
    lat_cache (B, L, Pm, D) latent layers' normed inputs (memory updates, chunk commit)
    lat_k, lat_v (B, L, Hg, Np + R + Pm, D / Hg) latent keys/values: persistent, carried, this chunk's slots
    lat_window (B, L, R, D), lat_valid (B, R) the carried patches (as in the chunk state)
    mem_w1, mem_w2, mem_s1, mem_s2 (B, L, ...) the memory as of the current memory chunk's start
A model without memory (cfg.memory False) carries no mem_*, one without experts no disp, disp_sum:
`step_state_names(cfg)` is the state of a model of that config.
"""
from __future__ import annotations

import torch
from torch import nn

from neat.blt import entropy
from neat.config import BOI_ID, EOI_ID, FIRST_CODE_ID, NEG
from neat.errors import NeatError
from neat.layers import carried_key_bias
from neat.model import MEMORY_STATE, NeatModel, present
from neat.step_cache import decoder_read, keep, latent_kv, onehot, put_row, read_kv, window_step
from neat.step_patch import close_patch, commit_chunk

STEP_STATE_NAMES = ("context", "pos", "npatch", "ent_prev", "seen", "mod_raw", "disp", "disp_sum", "ent_k", "ent_v",
                    "enc_window", "enc_k", "enc_v", "dec_window", "dec_k", "dec_v", "xbuf", "pidbuf", "pool_k", "pool_v",
                    "gbuf", "read_k", "read_v", "lat_cache", "lat_k", "lat_v", "lat_window", "lat_valid",
                    "mem_w1", "mem_w2", "mem_s1", "mem_s2")
WINDOW_KV = ("enc_k", "enc_v", "dec_k", "dec_v")
EXPERT_STEP_STATE = ("disp", "disp_sum")  # only with cfg.experts


def step_state_names(cfg) -> tuple[str, ...]:
    """The step state a model of this config carries, in order."""
    return present(STEP_STATE_NAMES, cfg, EXPERT_STEP_STATE)
GATE_INPUTS = ("context", "pos", "npatch", "ent_prev")  # what needs_patch reads of the state (`gate`)


class StepStateError(NeatError):
    """A step state is used where it does not fit (e.g. read as a chunk state in the middle of a chunk)."""


class DecodeStep(nn.Module):
    """forward(token int32 (B, 1), *step_state) -> (logits (B, 1, V), *new_step_state); the same from
    byte_step where needs_patch(token, *step_state) is false."""

    def __init__(self, model: NeatModel):
        super().__init__()
        if getattr(model.cfg, "arch", "neat") != "neat":
            raise StepStateError(f"DecodeStep steps a NeatModel, not a {model.cfg.arch!r} model: load a NEAT "
                                 "checkpoint (the plain baseline has no decode step)")
        self.model = model
        self.names = step_state_names(model.cfg)  # this model's step state, in order

    # ----- state ---------------------------------------------------------------------------------
    @torch.no_grad()
    def step_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """The step state before the first byte of every sequence (plain data: its keys come from the weights,
        but nothing differentiates through an initial state)."""
        return self.from_chunk_state(self.model.init_state(batch))

    def from_chunk_state(self, state) -> tuple[torch.Tensor, ...]:
        """A chunk state (after a prefill of whole chunks) -> the step state at t = 0 of the next chunk."""
        return self._enter(state)

    def _enter(self, state, windows=None) -> tuple[torch.Tensor, ...]:
        """from_chunk_state; windows: the byte windows' keys/values (WINDOW_KV) where they are at hand (a
        restart: the commit passes the windows through), else projected from the chunk state's windows."""
        m, c = self.model, self.model.cfg
        C = dict(zip(m.state_names, state, strict=True))
        context, seen, prev_patch, enc_win, dec_win = C["context"], C["seen"], C["prev_patch"], C["enc_window"], C["dec_window"]
        lat_win = C["lat_window"]
        B, f = context.shape[0], seen.dtype
        T, Pm, D, L = c.chunk_len, c.max_patches, c.global_dim, c.global_layers
        He = c.ent_heads
        zeros = seen.new_zeros
        if windows is None:
            windows = (*m.encoder.block.attn.kv(enc_win), *m.decoder.block.attn.kv(dec_win))  # (B, Hl, W, hd)
        enc_k, enc_v, dec_k, dec_v = windows
        gbuf = torch.cat([prev_patch[:, None], zeros(B, Pm, D)], dim=1)
        pool = (m.encoder.cross.heads, T, m.encoder.cross.head_dim)  # stale rows are masked by pidbuf
        read_k, read_v = read_kv(m.decoder, prev_patch, Pm)  # (B, Hl, Pm, d / Hl)
        lat_k, lat_v = latent_kv(m, lat_win)  # (B, L, Hg, Np + R + Pm, D / Hg)
        ent = (c.ent_layers, He, T, c.ent_dim // He)  # two tensors: aliased inputs would be one in an export
        S = dict(context=context, pos=zeros(B, 1), npatch=zeros(B, 1), ent_prev=zeros(B, 1), seen=seen,
                 mod_raw=C["modality"], ent_k=zeros(B, *ent), ent_v=zeros(B, *ent), enc_window=enc_win, enc_k=enc_k,
                 enc_v=enc_v, dec_window=dec_win, dec_k=dec_k, dec_v=dec_v, xbuf=zeros(B, T, c.local_dim),
                 pidbuf=torch.full((B, T), -1.0, dtype=f, device=seen.device), pool_k=zeros(B, *pool),
                 pool_v=zeros(B, *pool), gbuf=gbuf, read_k=read_k, read_v=read_v, lat_cache=zeros(B, L, Pm, D),
                 lat_k=lat_k, lat_v=lat_v, lat_window=lat_win, lat_valid=C["lat_valid"])
        if c.experts:
            S.update(disp=C["dispatch"], disp_sum=zeros(B, D))
        S.update((n, C[n]) for n in MEMORY_STATE if c.memory)
        return tuple(S[n] for n in self.names)

    def chunk_state(self, state) -> tuple[torch.Tensor, ...]:
        """The chunk state after a full chunk of steps (what NeatModel.forward returns for that chunk)."""
        S = dict(zip(self.names, state, strict=True))
        if not bool((S["pos"] == self.model.cfg.chunk_len).all()):
            raise StepStateError(
                f"chunk_state needs a full chunk of {self.model.cfg.chunk_len} steps, but positions are "
                f"{S['pos'][:, 0].tolist()}: step to the chunk end first (partial chunks have no chunk state)")
        return self.commit(*state)

    # ----- the step --------------------------------------------------------------------------------
    def forward(self, token: torch.Tensor, *state: torch.Tensor):
        """The whole step in one static graph: the latent layers run for one slot every step and their
        results are kept only where a patch completed (masked arithmetic)."""
        S = dict(zip(self.names, state, strict=True))
        full, t, npatch, pid, close = self._plan(token, S)
        S = self._close(S, S["npatch"], close, full)
        S = self._restart(S, full)  # (a line of its own: fp32 scopes match call lines, see _restart)
        S["pos"], S["npatch"] = t, npatch
        return self._byte(token, S, pid)

    def patch_step(self, token: torch.Tensor, *state: torch.Tensor):
        """`forward` for a step state that is not full (fewer than T steps since its chunk started): a runtime
        that commits full states itself (`commit`, then from_chunk_state) steps with this, and the chunk
        restart is not masked into every step that closes a patch."""
        S = dict(zip(self.names, state, strict=True))
        full, t, npatch, pid, close = self._plan(token, S)
        S = self._close(S, S["npatch"], close, full)  # (full: never set where this step is valid)
        S["pos"], S["npatch"] = t, npatch
        return self._byte(token, S, pid)

    def commit(self, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """chunk_state without its check, as a graph: the chunk state of a full step state (T steps since its
        chunk started; anything else gives a state that means nothing)."""
        S = dict(zip(self.names, state, strict=True))
        done = S["pos"] >= 0.0  # (B, 1) all set, computed: coremltools fails on `&` with a constant bool tensor
        return self._commit(self._close(S, S["npatch"], done, done))

    def needs_patch(self, token: torch.Tensor, *state: torch.Tensor) -> torch.Tensor:
        """(B, 1) bool: this token starts a patch (completing the one before) or follows a full chunk, so the
        step must run the latent layers (`forward`); where it is false everywhere, `byte_step` gives the same
        result for less."""
        S = dict(zip(self.names, state, strict=True))
        return self.gate(token, *(S[n] for n in GATE_INPUTS))

    def gate(self, token: torch.Tensor, context: torch.Tensor, pos: torch.Tensor, npatch: torch.Tensor,
             ent_prev: torch.Tensor) -> torch.Tensor:
        """needs_patch from the only state entries it reads (a gate is called before every step: 5 inputs
        instead of the whole state)."""
        return self._plan(token, dict(zip(GATE_INPUTS, (context, pos, npatch, ent_prev))))[-1]

    def byte_step(self, token: torch.Tensor, *state: torch.Tensor):
        """`forward` without the latent layers, for a token where `needs_patch` is false (the split entry point)."""
        S = dict(zip(self.names, state, strict=True))
        _, t, npatch, pid, _ = self._plan(token, S)
        S["pos"], S["npatch"] = t, npatch
        return self._byte(token, S, pid)

    def _restart(self, S, full):
        """Where the previous step ended a chunk (full (B, 1)), the step state at t = 0 of the next chunk (the
        chunk committed); elsewhere S as it is. Its own method: an fp16 artifact keeps this selection in fp32,
        else every full step would round the state it passes through (the entropy model's cache: H moves).
        fp32 scopes match the source lines of an op's stack, so its call line calls nothing else."""
        fresh = dict(zip(self.names, self._enter(self._commit(S), tuple(S[k] for k in WINDOW_KV))))
        return {k: v if fresh[k] is v else keep(full, fresh[k], v) for k, v in S.items()}  # passed through: as is

    def _plan(self, token, S):
        """Where the byte falls: full (B, 1) the previous step ended a chunk; t its position; npatch the boundaries
        so far; pid its patch slot; close: the slot before it is complete (the latent layers must run)."""
        c = self.model.cfg
        T, Pm = c.chunk_len, c.max_patches
        full = S["pos"] >= T
        t = torch.where(full, torch.zeros_like(S["pos"]), S["pos"])
        first = t == 0
        b = (S["ent_prev"] > c.entropy_threshold) | first | (token >= BOI_ID) | (S["context"][:, -1:] >= BOI_ID)
        npatch = torch.where(first, torch.zeros_like(t), S["npatch"]) + b.to(t.dtype)
        pid = (npatch - 1.0).clamp(max=Pm - 1)
        close = full | (~first & (pid > (S["npatch"] - 1.0).clamp(max=Pm - 1)))
        return full, t, npatch, pid, close

    def _byte(self, token, S, pid):
        """Entropy, encoder and decoder layers for the byte at position S['pos'] of patch slot pid (B, 1)."""
        m, c = self.model, self.model.cfg
        T, W = c.chunk_len, c.local_window
        t = S["pos"]
        at = onehot(t, T)  # (B, 1, T)
        ent, ent_k, ent_v = self._entropy(token, S["ent_k"], S["ent_v"], t, at)
        # encoder byte, with the unclamped image counters of the chunk so far
        mod = S["mod_raw"]
        kb = carried_key_bias((S["seen"] + t).clamp(max=float(W)), W, 1)[..., 1:]  # (B, 1, 1, W)
        x = m.encoder.embed(token, S["context"], mod, at @ m.encoder.pos)  # (B, 1, d)
        x, enc_win, enc_k, enc_v = window_step(m.encoder.block, x, S["enc_window"], S["enc_k"], S["enc_v"], kb)
        # decoder byte: complete patches only (gbuf slots 0..pid, through their read keys/values)
        y = decoder_read(m.decoder, x, S["read_k"], S["read_v"], pid)
        y, dec_win, dec_k, dec_v = window_step(m.decoder.block, y, S["dec_window"], S["dec_k"], S["dec_v"], kb)
        pool_k, pool_v = m.encoder.cross.kv(m.encoder.norm_kv(x))  # (B, Hg, 1, D / Hg): this byte's row
        mask, _ = m.modality(token, mod)
        logits = m.decoder.head(m.decoder.norm(y)) + mask  # (B, 1, V)
        is_boi, is_eoi = (token == BOI_ID).to(t.dtype), (token == EOI_ID).to(t.dtype)
        n_img = float(c.image_tokens)
        mod = torch.cat([mod[:, :1] + is_boi - is_eoi,
                         mod[:, 1:] + (token >= FIRST_CODE_ID).to(t.dtype) - n_img * is_eoi], dim=1)
        S.update(context=torch.cat([S["context"][:, 1:], token], dim=1), pos=t + 1.0, ent_prev=ent, mod_raw=mod,
                 ent_k=ent_k, ent_v=ent_v, enc_window=enc_win, enc_k=enc_k, enc_v=enc_v, dec_window=dec_win,
                 dec_k=dec_k, dec_v=dec_v,
                 xbuf=put_row(S["xbuf"], x, at), pidbuf=torch.where(at[:, 0] > 0, pid, S["pidbuf"]),
                 pool_k=put_row(S["pool_k"], pool_k, at), pool_v=put_row(S["pool_v"], pool_v, at))
        return (logits, *(S[k] for k in self.names))

    def _entropy(self, token, ent_k, ent_v, t, at):
        """The entropy model for the byte at position t (B, 1), one-hot at (B, 1, T): causal over the chunk so
        far (absolute positions) -> H (B, 1), the new ent_k, ent_v (B, Le, He, T, de / He). Its own method, like
        `_plan`: the patch decisions hang on H > theta, so an fp16 artifact keeps both in fp32."""
        m, T = self.model, self.model.cfg.chunk_len
        e = m.entropy.tok(token) + at @ m.entropy.pos  # (B, 1, de)
        bias = ((torch.arange(T, device=t.device, dtype=t.dtype) > t) * NEG)[:, None, None, :]  # (B, 1, 1, T)
        ks, vs = [], []
        for i, block in enumerate(m.entropy.blocks):
            h = block.norm1(e)
            kn, vn = block.attn.kv(h)  # (B, He, 1, de / He)
            k, v = put_row(ent_k[:, i], kn, at), put_row(ent_v[:, i], vn, at)  # (B, He, T, de / He)
            e = e + block.attn.attend(h, k, v, bias)
            e = e + block.mlp(block.norm2(e))
            ks.append(k)
            vs.append(v)
        return entropy(m.entropy.head(m.entropy.norm(e))), torch.stack(ks, dim=1), torch.stack(vs, dim=1)

    def _close(self, S, npatch, do, end):
        """The latent layers for the patch just completed (neat.step_patch.close_patch)."""
        return close_patch(self.model, S, npatch, do, end)

    def _commit(self, S):
        """The chunk state from a full step state (neat.step_patch.commit_chunk)."""
        return commit_chunk(self.model, S)
