"""Draw the app icons (icons/icon-192.png, icons/icon-512.png) with the standard library.

A full-bleed blue square with a white disc and a blue check mark, all inside the
central 80% circle, so the same file works as a "maskable" icon. Run from anywhere:
``python authenticator_app/tools/make_icons.py``.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

ICONS = Path(__file__).resolve().parents[1] / "icons"
BLUE = (31, 58, 138)
WHITE = (255, 255, 255)
SUPERSAMPLE = 3
DISC_RADIUS = 0.30
CHECK = ((0.37, 0.51), (0.465, 0.605), (0.645, 0.415))
CHECK_HALF_WIDTH = 0.032


def _segment_distance(
    px: float, py: float, a: tuple[float, float], b: tuple[float, float]
) -> float:
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def _colour_at(x: float, y: float) -> tuple[int, int, int]:
    if math.hypot(x - 0.5, y - 0.5) > DISC_RADIUS:
        return BLUE
    near_check = min(_segment_distance(x, y, CHECK[i], CHECK[i + 1]) for i in range(2))
    return BLUE if near_check <= CHECK_HALF_WIDTH else WHITE


def render(size: int) -> bytes:
    rows = []
    n = SUPERSAMPLE
    for py in range(size):
        row = bytearray([0])  # PNG filter type 0 (None) for this scanline
        for px in range(size):
            total = [0, 0, 0]
            for sy in range(n):
                for sx in range(n):
                    colour = _colour_at((px + (sx + 0.5) / n) / size, (py + (sy + 0.5) / n) / size)
                    for i in range(3):
                        total[i] += colour[i]
            row.extend(round(c / (n * n)) for c in total)
        rows.append(bytes(row))
    return png(size, size, b"".join(rows))


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(width: int, height: int, raw_rgb_scanlines: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw_rgb_scanlines, 9))
        + _chunk(b"IEND", b"")
    )


def main() -> None:
    ICONS.mkdir(exist_ok=True)
    for size in (192, 512):
        (ICONS / f"icon-{size}.png").write_bytes(render(size))


if __name__ == "__main__":
    main()
