"""Saving decoded images as PNG with the standard library only (8-bit grey)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def save_png(path: str | Path, image: np.ndarray, scale: int = 8) -> Path:
    """(H, W) values in [0, 1] -> an 8-bit grey PNG, each pixel drawn as scale x scale."""
    pixels = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    h, w = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def distinct_cells(image: np.ndarray, cell_px: int) -> tuple[int, int]:
    """(cells, distinct cells) of an (H, W) image made of cell_px x cell_px cells (decode_image's output)."""
    h, w = image.shape
    cells = image.reshape(h // cell_px, cell_px, w // cell_px, cell_px).transpose(0, 2, 1, 3).reshape(-1, cell_px ** 2)
    return len(cells), len(np.unique(np.round(cells, 4), axis=0))
