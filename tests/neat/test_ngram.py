"""N-gram baseline: matches a plain-dict Witten-Bell recursion, normalises, learns text, rejects non-bytes."""
from collections import Counter, defaultdict

import numpy as np
import pytest

from neat.ngram import NGramModel


def skewed_bytes(n: int, seed: int) -> np.ndarray:
    """n bytes from a small skewed alphabet with a little order-2 structure, so long histories repeat."""
    rng = np.random.default_rng(seed)
    alphabet = np.array([97, 98, 99, 100, 32, 10, 7])
    x = alphabet[rng.choice(len(alphabet), size=n, p=[0.35, 0.2, 0.15, 0.1, 0.1, 0.07, 0.03])]
    x[2::5] = np.where(x[:-2:5] == 97, 98, x[2::5])  # 'a' two back forces 'b' at every fifth position
    return x.astype(np.uint8)


class DictWittenBell:
    """The recursion written out literally over dicts of tuples: slow, obviously the definition."""

    def __init__(self, train, order):
        self.order, self.n = order, len(train)
        train = [int(b) for b in train]
        self.unigram = Counter(train)
        self.after = defaultdict(Counter)  # history tuple (1..order-1 bytes) -> Counter of next bytes
        for i, w in enumerate(train):
            for L in range(1, order):
                if i >= L:
                    self.after[tuple(train[i - L:i])][w] += 1

    def prob(self, w, h):
        if not h:
            return (self.unigram[w] + 1) / (self.n + 256)
        lower = self.prob(w, h[1:])  # h' drops the oldest byte
        c = self.after.get(h)
        if not c:
            return lower
        return (c[w] + len(c) * lower) / (sum(c.values()) + len(c))

    def bits(self, seq):
        seq = [int(b) for b in seq]
        return np.array([-np.log2(self.prob(w, tuple(seq[max(0, i - self.order + 1):i])))
                         for i, w in enumerate(seq)])


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 6])
def test_matches_dict_recursion(order):
    train = skewed_bytes(2000, seed=1)
    seq = np.concatenate([skewed_bytes(400, seed=2), [0, 255, 200, 97, 98], skewed_bytes(30, seed=3)])
    model, ref = NGramModel(train, order), DictWittenBell(train, order)
    got, want = model.bits(seq), ref.bits(seq)
    assert got.dtype == np.float64 and got.shape == (len(seq),)
    assert np.abs(got - want).max() < 1e-9
    # context: the same costs as scoring context + seq and dropping the context's
    ctx = seq[:50]
    np.testing.assert_allclose(model.bits(seq[50:], context=ctx), got[50:], rtol=0, atol=1e-12)
    # sequences shorter than the order, and training data shorter than the order
    np.testing.assert_allclose(model.bits(seq[:2]), want[:2], rtol=0, atol=1e-9)
    tiny = NGramModel(train[:3], order)
    assert np.abs(tiny.bits(seq[:40]) - DictWittenBell(train[:3], order).bits(seq[:40])).max() < 1e-9


def test_next_byte_distribution_sums_to_one():
    train = skewed_bytes(2000, seed=1)
    model = NGramModel(train, order=6)
    histories = [b"", b"a", b"ab", bytes(train[100:105]), bytes(train[7:20]), b"\xff\xfe\x00zz", b"dcba "]
    for h in histories:
        p = model.prob_table(h)
        assert p.shape == (256,) and (p > 0).all()
        assert abs(p.sum() - 1.0) < 1e-12, (h, p.sum())
        # the table and bits() agree: P(w | h) = 2 ** -bits(w, context=h)
        for w in (0, 97, 98, 255):
            np.testing.assert_allclose(p[w], 2.0 ** -model.bits(np.array([w]), context=np.frombuffer(h, np.uint8)),
                                       rtol=1e-12)
    # a seen history concentrates mass on what followed it
    assert model.prob_table(bytes(train[100:105]))[train[105]] > 0.1


def test_repetitive_text_costs_far_less_than_random_bytes():
    words = ("the model reads bytes and predicts the next one while the export keeps every kernel static "
             "so that each runtime sees the same graph").split()

    def text(n_words, seed):
        rng = np.random.default_rng(seed)
        return np.frombuffer(" ".join(rng.choice(words, n_words)).encode(), np.uint8)

    model = NGramModel(text(6000, seed=0), order=6)
    held_out = model.bits(text(800, seed=1)).mean()
    noise = model.bits(np.random.default_rng(2).integers(0, 256, 4000)).mean()
    assert held_out < 3.0 and noise > 7.0, (held_out, noise)
    assert held_out < 0.3 * noise
    assert model.bits_per_byte(text(800, seed=1)) == pytest.approx(held_out)


def test_bad_input_is_rejected_with_a_reason():
    ok = np.array([1, 2, 3], np.uint8)
    with pytest.raises(ValueError, match=r"0\.\.255.*300"):
        NGramModel(np.array([1, 2, 300]), order=3)
    with pytest.raises(ValueError, match="1-D"):
        NGramModel(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="order"):
        NGramModel(ok, order=0)
    with pytest.raises(ValueError, match="integer dtype"):
        NGramModel(np.array([1.5, 2.0]))
    model = NGramModel(ok, order=3)
    with pytest.raises(ValueError, match=r"seq.*0\.\.255.*300"):
        model.bits(np.array([5, 300]))
    with pytest.raises(ValueError, match=r"context.*-1"):
        model.bits(ok, context=np.array([-1]))
    with pytest.raises(ValueError, match="1-D"):
        model.bits(np.zeros((2, 2), np.int64))
