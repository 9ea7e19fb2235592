"""Training and held-out data that exists on any machine with Python, generated or read locally.

Three tasks, one per Transformer² expert, and a fourth that no expert owns:
- prose: the interpreter's own help text (pydoc_data topics) and module docstrings of the standard library;
- code: standard-library Python source;
- grid: small grid worlds (FrozenLake-like maps with keys, doors and water) rendered as 16x16 grey images,
  paired with their ASCII map in both directions: "draw" (map -> image) and "look" (image -> map).
- recall: key-value recall across kilobytes (`let key=1234;` defined, then at least RECALL_GAP bytes of prose,
  then `get key=1234;`): the queried values lie far beyond the 32-byte byte window and the 8 carried patches,
  so only a long-range memory can predict them (a job for the Titans memory).
Held-out splits are disjoint by file / topic / random seed.
"""
from __future__ import annotations

import ast
import functools
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neat.config import BOI_ID, EOI_ID, NeatConfig

CELL_CHARS = ".HAG#KD~LT$B=^oX"  # ice hole agent goal wall key door water lava tree coin box ladder spike orb trap
MAX_CODE_BYTES = 3_000_000
MAX_PROSE_BYTES = 3_000_000


def _held_out(name: str) -> bool:
    """A stable 1-in-8 split by name (crc32, not Python's salted hash)."""
    return zlib.crc32(name.encode()) % 8 == 0


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "idlelib", "lib2to3", "site-packages", "tkinter", "turtledemo", "ensurepip")
    files = [p for p in root.rglob("*.py") if not any(part in skip for part in p.relative_to(root).parts)]
    return sorted(files, key=lambda p: str(p.relative_to(root)))


@functools.lru_cache(maxsize=4)
def text_corpus(task: str, held_out: bool) -> bytes:
    """UTF-8 bytes of the prose or code corpus, training or held-out split."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[bytes] = []
    if task == "code":
        for path in _stdlib_files():
            if _held_out(str(path.relative_to(root))) == held_out:
                parts.append(path.read_bytes())
            if sum(map(len, parts)) > MAX_CODE_BYTES:
                break
    elif task == "prose":
        try:
            from pydoc_data.topics import topics
        except ImportError:  # some distributions strip it; the docstrings still give prose
            topics = {}
        parts += [topics[k].encode() for k in sorted(topics) if _held_out(k) == held_out]
        for path in _stdlib_files():
            if _held_out(str(path.relative_to(root))) != held_out:
                continue
            try:
                tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) > 200:
                        parts.append(doc.encode())
            if sum(map(len, parts)) > MAX_PROSE_BYTES:
                break
    else:
        raise ValueError(f"no text corpus for task {task!r}")
    return b"\n\n".join(parts)


# ----- grid worlds ------------------------------------------------------------------------------
def _cell_patterns(px: int) -> np.ndarray:
    """(len(CELL_CHARS), px, px): one icon per cell type, light strokes on dark.

    Icons are binary masks drawn from a fixed seed, any two differing in at least px + 1 pixels, so the
    k-means codebook recovers one code per cell type under the rendering noise.
    """
    rng = np.random.default_rng(1234)
    masks: list[np.ndarray] = [np.zeros(px * px, bool)]
    while len(masks) < len(CELL_CHARS):
        m = rng.random(px * px) < 0.5
        if all((m != other).sum() > px for other in masks):
            masks.append(m)
    return np.stack([0.15 + 0.7 * m.reshape(px, px) for m in masks]).astype(np.float32)


@dataclass
class GridSample:
    grid: list[str]        # G strings of G cell characters
    image: np.ndarray      # (G*px, G*px) float32 in [0, 1]


def random_grids(cfg: NeatConfig, n: int, seed: int) -> list[GridSample]:
    rng = np.random.default_rng(seed)
    G, px = cfg.image_grid, cfg.patch_px
    patterns = _cell_patterns(px)
    weights = np.array([12, 3, 0, 0, 3] + [1] * (len(CELL_CHARS) - 5), dtype=float)
    out = []
    for _ in range(n):
        cells = rng.choice(len(CELL_CHARS), size=(G, G), p=weights / weights.sum())
        a, g = rng.choice(G * G, size=2, replace=False)
        cells[a // G, a % G], cells[g // G, g % G] = CELL_CHARS.index("A"), CELL_CHARS.index("G")
        image = np.zeros((G * px, G * px), np.float32)
        for r in range(G):
            for c in range(G):
                image[r * px:(r + 1) * px, c * px:(c + 1) * px] = patterns[cells[r, c]]
        image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1).astype(np.float32)
        out.append(GridSample(["".join(CELL_CHARS[v] for v in row) for row in cells], image))
    return out


def tokenize_images(images: np.ndarray, codes: np.ndarray, cfg: NeatConfig) -> np.ndarray:
    """(N, H, W) images -> (N, G*G) image token ids, through the nearest code."""
    import torch

    from neat.mvot import VisualCodebook

    book = VisualCodebook(cfg)
    book.codes.data = torch.from_numpy(codes)
    return book.tokenize(torch.from_numpy(images)).numpy()


def grid_tokens(sample: GridSample, image_ids: np.ndarray, direction: str) -> list[int]:
    """One interleaved sample: 'draw' = map text then image span; 'look' = image span then map text."""
    span = [BOI_ID, *image_ids.tolist(), EOI_ID]
    ascii_map = "\n".join(sample.grid).encode()
    if direction == "draw":
        return list(b"map:\n" + ascii_map + b"\ndraw: ") + span + [10]
    return list(b"look: ") + span + list(b"\nmap:\n" + ascii_map + b"\n")


def learn_codebook(cfg: NeatConfig, seed: int = 0, n_images: int = 1500) -> np.ndarray:
    """k-means over the cell patches of training grid images -> (K, code_dim) codebook."""
    from neat.mvot import kmeans

    px, G = cfg.patch_px, cfg.image_grid
    imgs = np.stack([s.image for s in random_grids(cfg, n_images, seed)])
    patches = imgs.reshape(-1, G, px, G, px).transpose(0, 1, 3, 2, 4).reshape(-1, px * px)
    return kmeans(patches, cfg.n_codes, seed=seed)


@dataclass
class TaskStream:
    """A task's token stream and the offsets where a window may start (sample starts for grids)."""

    task: str
    tokens: np.ndarray     # (N,) int32
    starts: np.ndarray     # (M,) int64
    scored: np.ndarray | None = None  # (N,) bool: the positions a task-specific score counts (recall: values)


def grid_stream(cfg: NeatConfig, codes: np.ndarray, n: int, seed: int, directions=("draw", "look")) -> TaskStream:
    samples = random_grids(cfg, n, seed)
    ids = tokenize_images(np.stack([s.image for s in samples]), codes, cfg)
    toks: list[int] = []
    starts = []
    for i, sample in enumerate(samples):
        starts.append(len(toks))
        toks += grid_tokens(sample, ids[i], directions[i % len(directions)])
    return TaskStream("grid", np.asarray(toks, np.int32), np.asarray(starts, np.int64))


def text_stream(task: str, held_out: bool) -> TaskStream:
    data = np.frombuffer(text_corpus(task, held_out), dtype=np.uint8).astype(np.int32)
    return TaskStream(task, data, np.arange(0, max(len(data) - 1, 1), dtype=np.int64))


def sample_windows(stream: TaskStream, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    """(batch, length) windows that start at allowed offsets and fit in the stream."""
    ok = stream.starts[stream.starts + length <= len(stream.tokens)]
    picks = rng.choice(ok, size=batch)
    return np.stack([stream.tokens[p:p + length] for p in picks])


# ----- key-value recall across kilobytes ----------------------------------------------------------
RECALL_PAIRS = 8     # key-value pairs defined per episode
RECALL_GAP = 1024    # prose bytes at least between the last definition and the first query of an episode
RECALL_TRAIN_SEED, RECALL_HELDOUT_SEED = 3, 1003


def _recall_keys(rng: np.random.Generator, n: int) -> list[bytes]:
    """n distinct 3-letter lowercase keys."""
    picks = rng.choice(26**3, size=n, replace=False)
    return [bytes(97 + (int(k) // 26**j) % 26 for j in range(3)) for k in picks]


def recall_stream(n_bytes: int, seed: int, held_out: bool, pairs: int = RECALL_PAIRS,
                  gap: int = RECALL_GAP) -> TaskStream:
    """At least `n_bytes` of key-value recall episodes: `pairs` definitions `let abc=0123;`, then gap to 2*gap
    bytes of prose (the held-out or training split), then every key queried once in a new order,
    `get abc=0123;`, then gap/4 to gap/2 bytes of prose. Keys are fresh in each episode; windows start at
    episode starts; `scored` marks the 4 value digits of every query (predictable only from the definition,
    at least `gap` bytes back)."""
    rng = np.random.default_rng(seed)
    prose = text_corpus("prose", held_out)

    def filler(lo: int, hi: int) -> bytes:
        n = int(rng.integers(lo, hi))
        at = int(rng.integers(0, len(prose) - n))
        return prose[at:at + n].replace(b"=", b" ")  # no '=' outside the pairs

    out, scored, starts = bytearray(), [], []
    while len(out) < n_bytes:
        starts.append(len(out))
        keys, values = _recall_keys(rng, pairs), [b"%04d" % v for v in rng.integers(0, 10_000, pairs)]
        out += b"".join(b"let " + k + b"=" + v + b";\n" for k, v in zip(keys, values))
        out += filler(gap, 2 * gap) + b"\n"
        for i in rng.permutation(pairs):
            out += b"get " + keys[i] + b"="
            scored += range(len(out), len(out) + 4)
            out += values[i] + b";\n"
        out += filler(gap // 4, gap // 2) + b"\n"
    mask = np.zeros(len(out), bool)
    mask[scored] = True
    return TaskStream("recall", np.frombuffer(bytes(out), np.uint8).astype(np.int32), np.asarray(starts, np.int64), mask)
