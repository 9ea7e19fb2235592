"""Interpolated byte n-gram count model (Witten-Bell): the count baseline beside a neural model's bits per byte.

Alphabet: the 256 byte values. With h a history of up to n-1 bytes and h' = h without its oldest byte:

    P_1(w)   = (c(w) + 1) / (N + 256)                                      add-one unigram, never 0
    P_n(w|h) = (c(h,w) + N1+(h.) * P_{n-1}(w|h')) / (c(h) + N1+(h.))      c(h) > 0
    P_n(w|h) = P_{n-1}(w|h')                                               c(h) = 0

c(h,w): training occurrences of h followed by w; c(h) = sum_w c(h,w); N1+(h.) = distinct w seen after h.
A position with fewer than n-1 earlier bytes uses the longest history it has.

Counts are kept per history length L = 0..order-1 as sorted int64 keys (the L history bytes in base 256, most
recent byte lowest; the joint key appends w as the lowest byte), built with np.unique and read with
np.searchsorted: no Python loop over bytes.
"""
from __future__ import annotations

import numpy as np

N_SYMBOLS = 256
MAX_ORDER = 7  # the joint key of a 6-byte history and its next byte takes 56 bits of an int64


def as_bytes(data, name: str) -> np.ndarray:
    """1-D int64 view of byte values 0..255; bytes/bytearray accepted. ValueError on anything else."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8).astype(np.int64)
    a = np.asarray(data)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of byte values, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype holding byte values 0..255, got dtype {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= N_SYMBOLS:
        bad = hi if hi >= N_SYMBOLS else lo
        raise ValueError(f"{name} must hold byte values 0..255, found {bad} "
                         f"(at index {int(np.flatnonzero(a == bad)[0])}); tokens beyond bytes are not modelled")
    return a.astype(np.int64)


def history_keys(x: np.ndarray, L: int, key: np.ndarray | None = None) -> np.ndarray:
    """(len(x)+1,) key of the L bytes before each position 0..len(x), most recent byte lowest; only [L:] is
    meaningful. `key` = the result for L-1 (extended in place) saves recomputing the newer bytes."""
    if key is None:
        key, first = np.zeros(len(x) + 1, np.int64), 1
    else:
        first = L
    for j in range(first, min(L, len(x)) + 1):  # j-th most recent byte, shifted into byte j-1
        key[j:] |= x[:len(x) + 1 - j] << (8 * (j - 1))
    return key


class NGramModel:
    """Witten-Bell interpolated byte n-gram model of `order` (1 = add-one unigram, up to MAX_ORDER)."""

    def __init__(self, train: np.ndarray, order: int = 6):
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order must be an integer in 1..{MAX_ORDER} (1 = unigram), got {order!r}")
        self.order = int(order)
        x = as_bytes(train, "train")
        self.n_train = len(x)
        self.unigram = np.bincount(x, minlength=N_SYMBOLS).astype(np.float64)  # (256,)
        # per history length L >= 1: sorted joint keys (h,w) + counts; sorted history keys h + c(h), N1+(h.)
        self.joint: list[tuple[np.ndarray, np.ndarray]] = [None]
        self.hist: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [None]
        key = np.zeros(len(x), np.int64)
        for L in range(1, self.order):
            key[L:] |= x[:max(len(x) - L, 0)] << (8 * (L - 1))  # extend each history by one older byte
            joint = (key[L:] << 8) | x[L:]
            jk, jc = np.unique(joint, return_counts=True)  # sorted (h,w) keys, c(h,w)
            h = jk >> 8  # sorted, so each history's (h,w) rows are contiguous
            first = np.flatnonzero(np.r_[True, h[1:] != h[:-1]]) if len(h) else np.zeros(0, np.int64)
            c_h = np.add.reduceat(jc, first) if len(first) else np.zeros(0, np.int64)
            n1 = np.diff(np.r_[first, len(h)])
            self.joint.append((jk, jc.astype(np.float64)))
            self.hist.append((h[first], c_h.astype(np.float64), n1.astype(np.float64)))

    @staticmethod
    def _lookup(keys: np.ndarray, values: tuple[np.ndarray, ...], q: np.ndarray) -> tuple[np.ndarray, ...]:
        """values at the positions of q in sorted keys, 0 where q is absent."""
        if len(keys) == 0:
            return tuple(np.zeros(len(q)) for _ in values)
        i = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        hit = keys[i] == q
        return tuple(np.where(hit, v[i], 0.0) for v in values)

    def _probs(self, w: np.ndarray, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """P(w[i] | the up to order-1 bytes of x before pos[i]): (len(w),) float64. pos indexes 0..len(x)."""
        p = (self.unigram[w] + 1.0) / (self.n_train + N_SYMBOLS)
        key = None
        for L in range(1, self.order):
            have = pos >= L  # shorter histories stop at the order they have
            if not have.any():
                break
            key = history_keys(x, L, key)
            h = key[pos]
            hk, c_h, n1 = self.hist[L]
            c_h, n1 = self._lookup(hk, (c_h, n1), h)
            jk, jc = self.joint[L]
            (c_hw,) = self._lookup(jk, (jc,), (h << 8) | w)
            seen = have & (c_h > 0)
            p = np.where(seen, (c_hw + n1 * p) / np.where(seen, c_h + n1, 1.0), p)
        return p

    def bits(self, seq: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        """(len(seq),) float64: -log2 P of each byte of seq given the bytes before it in context + seq."""
        s = as_bytes(seq, "seq")
        c = as_bytes(context if context is not None else b"", "context")
        c = c[len(c) - min(len(c), self.order - 1):]  # older bytes never matter
        x = np.concatenate([c, s])
        pos = np.arange(len(c), len(x))
        return -np.log2(self._probs(s, x, pos))

    def prob_table(self, history: bytes | np.ndarray = b"") -> np.ndarray:
        """(256,) P(w | history) for every byte w; only the last order-1 bytes of history count. Sums to 1."""
        h = as_bytes(history, "history")
        h = h[len(h) - min(len(h), self.order - 1):]
        return self._probs(np.arange(N_SYMBOLS), h, np.full(N_SYMBOLS, len(h)))

    def bits_per_byte(self, seq: np.ndarray, context: np.ndarray | None = None) -> float:
        """Mean of bits(seq, context)."""
        return float(self.bits(seq, context).mean())
