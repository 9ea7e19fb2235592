"""Data: held-out splits are disjoint, the codebook finds one code per cell type, grid samples are well-formed."""
import numpy as np

from neat import preset
from neat.config import BOI_ID, EOI_ID, FIRST_CODE_ID
from neat.data import (CELL_CHARS, _cell_patterns, _stdlib_files, grid_stream, learn_codebook, sample_windows,
                       text_corpus, tokenize_images)


def test_text_splits_are_disjoint_and_non_trivial():
    for task in ("prose", "code"):
        train, held = text_corpus(task, False), text_corpus(task, True)
        assert len(train) > 500_000 and len(held) > 100_000
        probe = held[len(held) // 2: len(held) // 2 + 400]
        assert probe not in train


def test_codebook_recovers_every_cell_type():
    cfg = preset("tiny")
    codes = learn_codebook(cfg, seed=0, n_images=400)
    patterns = _cell_patterns(cfg.patch_px)
    G = cfg.image_grid
    # one image per cell type, every cell that type
    imgs = np.stack([np.tile(p, (G, G)) for p in patterns]).astype(np.float32)
    ids = tokenize_images(imgs, codes, cfg)
    assert len({int(row[0]) for row in ids}) == len(CELL_CHARS)  # a distinct code for each type
    assert all(len(set(row.tolist())) == 1 for row in ids)


def test_grid_samples_are_well_formed_spans():
    cfg = preset("tiny")
    codes = learn_codebook(cfg, seed=0, n_images=300)
    stream = grid_stream(cfg, codes, 40, seed=7)
    toks = stream.tokens.tolist()
    boi = [i for i, t in enumerate(toks) if t == BOI_ID]
    assert len(boi) == 40
    for i in boi:
        span = toks[i + 1: i + 1 + cfg.image_tokens]
        assert all(t >= FIRST_CODE_ID for t in span) and toks[i + 1 + cfg.image_tokens] == EOI_ID
    rng = np.random.default_rng(0)
    windows = sample_windows(stream, rng, 16, 100)
    first = set(windows[:, 0].tolist())
    assert first <= {ord("m"), ord("l")}  # windows start where a sample starts ("map:" / "look:")


def test_stdlib_files_exclude_tests():
    assert not any("test" in p.parts for p in _stdlib_files())


def test_recall_stream_is_deterministic_and_its_values_lie_far_beyond_the_window():
    import re

    from neat.data import RECALL_GAP, recall_stream

    a, b = recall_stream(6000, 7, held_out=True), recall_stream(6000, 7, held_out=True)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.scored, b.scored)
    assert np.array_equal(a.starts, b.starts)
    assert not np.array_equal(recall_stream(6000, 8, held_out=True).tokens[:200], a.tokens[:200])
    text = bytes(a.tokens.astype(np.uint8))
    assert all(text[s:s + 4] == b"let " for s in a.starts)  # windows start at episode starts
    positions = np.flatnonzero(a.scored)
    assert len(positions) % 4 == 0 and len(positions) >= 4 * 8 * 2
    for p in positions[::4]:  # each query: 'get key=' then the 4 scored digits
        key, value = text[p - 4:p - 1], text[p:p + 4]
        assert text[p - 8:p] == b"get " + key + b"=" and value.isdigit()
        define = text.rfind(b"let " + key + b"=", 0, p)
        assert define >= 0 and text[define + 8:define + 12] == value  # defined earlier with this value
        assert p - define >= RECALL_GAP  # ... at least a kilobyte back: beyond 32 bytes and 8 patches
        recent = text[p - 512:p - 8]  # nothing in the last 512 bytes gives the value away
        assert key not in recent and not re.search(rb"=" + value, recent)
