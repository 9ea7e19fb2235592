"""The decode step's per-patch work (neat.step): closing a patch (the latent layers for the slot that just
completed, the memory update where it ends a memory chunk) and committing a full step state to the chunk
state. Functions of the model and a step state dict S (names: neat.step.STEP_STATE_NAMES); shapes as there.
"""
from __future__ import annotations

import torch

from neat.config import NEG
from neat.layers import l2norm
from neat.model import MEMORY_STATE, last_real
from neat.step_cache import keep, onehot, put_row
from neat.svf import DISPATCH_HORIZON, running_mean
from neat.titans import memory_apply


def close_patch(model, S, npatch, do, end):
    """Run the latent layers for the patch slot min(npatch - 1, Pm - 1), complete where do (B, 1) is set;
    update the memory where that slot ends a memory chunk or, with end (B, 1), the chunk."""
    m, c = model, model.cfg
    Pm, C, Np = c.max_patches, c.mem_chunk, c.persistent_tokens
    s = (npatch - 1.0).clamp(min=0.0, max=Pm - 1)  # (B, 1) the slot (with do unset: any valid index)
    f = s.dtype
    enc = m.encoder.pooled(S["xbuf"], (S["pidbuf"] == s).to(f)[..., None], S["pool_k"], S["pool_v"])  # (B, 1, D)
    mix = None  # without experts: plain MLPs
    if c.experts:  # Transformer² pass 1 on the patches so far (the running mean), pass 2 mix
        disp_sum = S["disp_sum"][:, None] + m.dispatch.norm(enc)  # (B, 1, D)
        rep = running_mean(S["disp"][:, None, :-1], S["disp"][:, None, -1:], disp_sum, (s + 1.0)[..., None])
        mix = torch.softmax(m.dispatch.head(torch.nn.functional.silu(m.dispatch.hidden(rep))), dim=-1)  # (B, 1, K)
    # latent layers for this slot: keys are persistent, carried and this chunk's slots 0..s
    sp = onehot(s, Pm)  # (B, 1, Pm)
    slots = torch.arange(Pm, device=s.device, dtype=f)
    key_ok = torch.cat([torch.ones_like(s).expand(-1, Np), S["lat_valid"], (slots <= s).to(f)], dim=1)
    bias = (sp @ m.latent_causal + (1.0 - key_ok[:, None, :]) * NEG)[:, None]  # (B, 1, 1, Np + R + Pm)
    first = torch.div(s, C, rounding_mode="floor") * C  # (B, 1) first slot of s's memory chunk
    rows = first + torch.arange(C, device=s.device, dtype=f)  # (B, C)
    pick = (rows[..., None] == slots).to(f)  # (B, C, Pm)
    row_ok = (rows <= s).to(f)  # (B, C) real slots of the memory chunk
    update = do & ((s - first == C - 1) | end)
    x = enc + sp @ m.slot_pos  # (B, 1, D)
    at_key = torch.cat([torch.zeros_like(s[..., None]).expand(-1, -1, Np + c.latent_window), sp], -1)
    caches, lat_k, lat_v, mems = [], [], [], []
    for i, layer in enumerate(m.layers):
        h = layer.norm1(x)
        cache = put_row(S["lat_cache"][:, i], h, sp)  # (B, Pm, D)
        kn, vn = layer.attn.kv(h)  # (B, Hg, 1, D / Hg)
        lk, lv = put_row(S["lat_k"][:, i], kn, at_key), put_row(S["lat_v"][:, i], vn, at_key)  # (B, Hg, N, .)
        a = layer.attn.attend(h, lk, lv, bias)
        if c.memory:
            w = [S[k][:, i] for k in MEMORY_STATE]
            r = layer.memory.out(memory_apply(l2norm(layer.memory.q(h)), w[0], w[1]))  # weights before the chunk
            g = torch.sigmoid(layer.gate(h))
            x = x + g * a + (1.0 - g) * r
            _, k, v, gates, theta = layer.memory.project(pick @ cache, row_ok)
            new = layer.memory.update(k, v, gates, theta, row_ok, *w)
            mems.append([keep(update, n, o) for n, o in zip(new, w)])
        else:
            x = x + a
        x = x + layer.mlp_out(layer.norm2(x), mix)
        caches.append(cache)
        lat_k.append(lk)
        lat_v.append(lv)
    out = m.norm(x)  # (B, 1, D)
    S = dict(S)
    S["gbuf"] = keep(do, put_row(S["gbuf"], out, onehot(s + 1.0, Pm + 1)), S["gbuf"])
    rk, rv = m.decoder.cross.kv(m.decoder.norm_kv(out))  # (B, Hl, 1, d / Hl): slot s + 1 (none past Pm - 1)
    S["read_k"] = keep(do, put_row(S["read_k"], rk, onehot(s + 1.0, Pm)), S["read_k"])
    S["read_v"] = keep(do, put_row(S["read_v"], rv, onehot(s + 1.0, Pm)), S["read_v"])
    if c.experts:
        S["disp_sum"] = keep(do, disp_sum[:, 0], S["disp_sum"])
    S["lat_cache"] = keep(do, torch.stack(caches, dim=1), S["lat_cache"])
    S["lat_k"] = keep(do, torch.stack(lat_k, dim=1), S["lat_k"])
    S["lat_v"] = keep(do, torch.stack(lat_v, dim=1), S["lat_v"])
    for j, k in enumerate(MEMORY_STATE if c.memory else ()):
        S[k] = torch.stack([mem[j] for mem in mems], dim=1)
    return S


def commit_chunk(model, S):
    """The chunk state from a step state whose chunk is complete and whose last patch is closed."""
    c = model.cfg
    T, W, R, Pm = c.chunk_len, c.local_window, c.latent_window, c.max_patches
    n = S["npatch"].clamp(max=float(Pm))  # (B, 1) real slots
    f = n.dtype
    sel = last_real(n[:, 0], R, Pm).to(f)  # (B, R, R + Pm)
    valid = (torch.arange(Pm, device=n.device, dtype=f) < n).to(f)  # (B, Pm)
    lat_valid = (sel @ torch.cat([S["lat_valid"], valid], 1)[..., None])[..., 0]  # (B, R)
    lat_window = torch.stack([sel @ torch.cat([S["lat_window"][:, i], S["lat_cache"][:, i]], 1)
                              for i in range(c.global_layers)], dim=1)  # (B, L, R, D)
    prev = (onehot(n, Pm + 1) @ S["gbuf"])[:, 0]  # (B, D) output of the last real slot
    inside = S["mod_raw"][:, :1].clamp(0.0, 1.0)
    mod = torch.cat([inside, (S["mod_raw"][:, 1:] * inside).clamp(0.0, float(c.image_tokens))], dim=1)
    seen = (S["seen"] + T).clamp(max=float(W))
    out = dict(context=S["context"], seen=seen, prev_patch=prev, modality=mod, enc_window=S["enc_window"],
               dec_window=S["dec_window"], lat_window=lat_window, lat_valid=lat_valid)
    if c.experts:
        mean, n0 = S["disp"][:, :-1], S["disp"][:, -1:]
        out["dispatch"] = torch.cat([running_mean(mean, n0, S["disp_sum"], n),
                                     (n0 + n).clamp(max=DISPATCH_HORIZON)], dim=-1)
    out.update((k, S[k]) for k in MEMORY_STATE if c.memory)
    return tuple(out[k] for k in model.state_names)
