"""Draw the app icons (icons/icon-192.png, icons/icon-512.png) and the notification badge
(icons/badge-96.png) with the standard library.

The icons: a full-bleed blue square with a white disc and a blue check mark, all inside
the central 80% circle, so the same file works as a "maskable" icon. The badge is
monochrome, as Android wants for the status bar: a white shield with the check mark cut
out, on transparency (only the alpha channel carries the shape). Run from anywhere:
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


BADGE_CHECK = ((0.33, 0.5), (0.455, 0.625), (0.67, 0.39))
BADGE_CHECK_HALF_WIDTH = 0.055


def _in_shield(x: float, y: float) -> bool:
    """A shield: peaked top, straight sides, rounded to a point at the bottom."""
    offset = abs(x - 0.5)
    if offset > 0.38 or y < 0.07 + 0.1 * offset / 0.38:
        return False
    if y <= 0.5:
        return True
    depth = (y - 0.5) / 0.44
    return depth < 1 and offset <= 0.38 * math.sqrt(1 - depth * depth)


def _badge_alpha(x: float, y: float) -> int:
    if not _in_shield(x, y):
        return 0
    near_check = min(_segment_distance(x, y, BADGE_CHECK[i], BADGE_CHECK[i + 1]) for i in range(2))
    return 0 if near_check <= BADGE_CHECK_HALF_WIDTH else 255


def render_badge(size: int) -> bytes:
    rows = []
    n = SUPERSAMPLE
    for py in range(size):
        row = bytearray([0])
        for px in range(size):
            alpha = sum(
                _badge_alpha((px + (sx + 0.5) / n) / size, (py + (sy + 0.5) / n) / size)
                for sy in range(n)
                for sx in range(n)
            )
            row.extend((*WHITE, round(alpha / (n * n))))
        rows.append(bytes(row))
    return png(size, size, b"".join(rows), alpha=True)


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(width: int, height: int, raw_rgb_scanlines: bytes, *, alpha: bool = False) -> bytes:
    colour_type = 6 if alpha else 2  # 8-bit RGBA or RGB
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
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
    (ICONS / "badge-96.png").write_bytes(render_badge(96))


if __name__ == "__main__":
    main()
