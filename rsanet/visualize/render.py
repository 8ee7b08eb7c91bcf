"""Draw captured kernels as paper Fig. 3 (PIL only, no plotting library).

Kernel figure (:func:`render_kernels`): one column per temporal offset of the window (t columns). The top
row shows the input frame at that offset with the query position (red) and its h x w context (yellow);
below it, for each kernel kind (self-attention, basic, relational) and each drawn query l, one row of h x w
heat maps, so that every heat map sits under the frame it weights. Columns whose frame lies outside the clip
are grey (the layer reads zeros there). Clip strip (:func:`render_clip`): all frames of the clip, the window's
frames with the yellow context and the query frame with the red query.

Colours: a heat map row is scaled by its largest magnitude ``vmax`` (printed in the row label) and drawn with
a linear white-centred map: value v in [-vmax, vmax], a = round(255 * (1 - |v| / vmax)); positive values are
(255, a, a) (white to red), negative ones (a, a, 255) (white to blue). Each kernel entry is a square block of
``block`` pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from rsanet.visualize.capture import KernelCapture

__all__ = ["Layout", "HeatmapCell", "Figure", "diverging_colors", "render_kernels", "render_clip", "row_titles"]

_KIND_TITLES = {"attention": "self-attn", "basic": "basic kV", "relational": "relational kR"}
_BACKGROUND, _INK, _OUTSIDE = (255, 255, 255), (20, 20, 20), (200, 200, 200)
_QUERY, _CONTEXT = (255, 0, 0), (255, 215, 0)


@dataclass(frozen=True)
class Layout:
    """Geometry of a figure: square cells of ``cell`` pixels separated by ``pad``, a label column on the
    left and a title band on top. A figure of ``rows`` x ``cols`` cells is :meth:`size` pixels."""

    cell: int = 96  # side of one frame or heat-map cell, pixels
    pad: int = 4  # gap between cells and around the grid, pixels
    label_width: int = 104  # width of the row-label column, pixels
    title_height: int = 30  # height of the title band, pixels

    def size(self, rows: int, cols: int) -> tuple[int, int]:
        """(width, height) in pixels of a grid of ``rows`` x ``cols`` cells."""
        return (self.label_width + self.pad + cols * (self.cell + self.pad),
                self.title_height + self.pad + rows * (self.cell + self.pad))

    def origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left pixel (x, y) of cell (row, col)."""
        return (self.label_width + self.pad + col * (self.cell + self.pad),
                self.title_height + self.pad + row * (self.cell + self.pad))


@dataclass
class HeatmapCell:
    """Where one (h, w) kernel slice was drawn: entry (i, j) fills the block at
    (x + j * block, y + i * block) of side ``block``; colours are scaled by ``vmax``."""

    kind: str
    query: int  # index l of the query among the layer's L
    time: int  # index of the temporal offset in the window (column)
    x: int
    y: int
    block: int
    vmax: float


@dataclass
class Figure:
    image: Image.Image
    heatmaps: list[HeatmapCell] = field(default_factory=list)


def diverging_colors(values: np.ndarray, vmax: float) -> np.ndarray:
    """uint8 RGB (..., 3) of ``values`` on the white-centred red/blue map scaled by ``vmax`` (module doc)."""
    v = np.clip(np.asarray(values, dtype=np.float64) / max(vmax, 1e-30), -1.0, 1.0)
    a = np.rint(255.0 * (1.0 - np.abs(v)))
    full = np.full_like(a, 255.0)
    rgb = np.where((v >= 0)[..., None], np.stack([full, a, a], -1), np.stack([a, a, full], -1))
    return rgb.astype(np.uint8)


def _font():
    return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill=_INK, stroke: bool = False) -> None:
    kwargs = {"stroke_width": 1, "stroke_fill": (0, 0, 0)} if stroke else {}
    draw.text(xy, text, fill=fill, font=_font(), **kwargs)


def _frame_cell(frame: torch.Tensor, cell: int) -> Image.Image:
    return Image.fromarray(frame.numpy()).resize((cell, cell), Image.BILINEAR)


def _boxes(cap: KernelCapture, cell: int) -> tuple[list[float], list[float]]:
    """Context and query rectangles [x0, y0, x1, y1] in cell pixels (frames are drawn as cell x cell)."""
    _, fh, fw = cap.feature_shape
    _, kh, kw = cap.kernel_size
    _, qh, qw = cap.query
    sy, sx = cell / fh, cell / fw  # cell pixels per feature-map position
    ctx = [max(qw - kw // 2, 0) * sx, max(qh - kh // 2, 0) * sy,
           min(qw + (kw - 1) // 2 + 1, fw) * sx - 1, min(qh + (kh - 1) // 2 + 1, fh) * sy - 1]
    query = [qw * sx, qh * sy, (qw + 1) * sx - 1, (qh + 1) * sy - 1]
    return ctx, query


def _frame_index(cap: KernelCapture, feature_t: int) -> Optional[int]:
    """Input frame shown for feature time ``feature_t``, None outside the clip."""
    if not 0 <= feature_t < cap.feature_shape[0]:
        return None
    return feature_t * cap.frames.shape[0] // cap.feature_shape[0]


def _draw_frame(canvas: Image.Image, cap: KernelCapture, layout: Layout, row: int, col: int,
                feature_t: int, with_query: bool) -> None:
    x, y = layout.origin(row, col)
    draw = ImageDraw.Draw(canvas)
    index = _frame_index(cap, feature_t)
    if index is None:
        draw.rectangle([x, y, x + layout.cell - 1, y + layout.cell - 1], fill=_OUTSIDE)
        _text(draw, (x + 4, y + 4), "outside clip")
        return
    canvas.paste(_frame_cell(cap.frames[index], layout.cell), (x, y))
    ctx, query = _boxes(cap, layout.cell)
    draw.rectangle([x + ctx[0], y + ctx[1], x + ctx[2], y + ctx[3]], outline=_CONTEXT, width=2)
    if with_query:
        draw.rectangle([x + query[0], y + query[1], x + query[2], y + query[3]], outline=_QUERY, width=2)
    _text(draw, (x + 3, y + 2), f"t={feature_t}", fill=(255, 255, 255), stroke=True)


def _draw_heatmap(canvas: Image.Image, values: torch.Tensor, vmax: float, x: int, y: int,
                  cell: int) -> tuple[int, int, int]:
    """Paste one (h, w) kernel slice centred in the cell at (x, y); returns its (x, y, block)."""
    kh, kw = values.shape
    block = max(cell // max(kh, kw), 1)
    rgb = diverging_colors(values.numpy(), vmax)  # (h, w, 3)
    img = Image.fromarray(rgb).resize((kw * block, kh * block), Image.NEAREST)
    ox, oy = x + (cell - kw * block) // 2, y + (cell - kh * block) // 2
    canvas.paste(img, (ox, oy))
    # a thin grey outline, on the outermost pixels only (block centres keep their colour)
    ImageDraw.Draw(canvas).rectangle([ox, oy, ox + kw * block - 1, oy + kh * block - 1], outline=_OUTSIDE)
    return ox, oy, block


def row_titles(cap: KernelCapture, queries: Sequence[int]) -> list[tuple[str, int]]:
    """(kind, query) of every kernel row in drawing order: kinds in capture order, then queries."""
    return [(kind, q) for kind in cap.kernels for q in queries]


def _title(cap: KernelCapture) -> list[str]:
    t, h, w = cap.query
    shape = "x".join(str(s) for s in cap.feature_shape)
    return [cap.layer + ("  (reversed clip)" if cap.reversed else ""), f"query t,h,w={t},{h},{w} of {shape}"]


def render_kernels(cap: KernelCapture, layout: Layout = Layout(), queries: Optional[Sequence[int]] = None) -> Figure:
    """The Fig. 3 grid of a capture: frames on top, then one heat-map row per (kind, query)."""
    num_queries = next(iter(cap.kernels.values())).shape[0]
    queries = list(range(num_queries)) if queries is None else list(queries)
    bad = [q for q in queries if not 0 <= q < num_queries]
    if bad or not queries:
        raise ValueError(f"queries {bad or queries} are not among the layer's {num_queries} (0..{num_queries - 1})")
    kt = cap.kernel_size[0]
    rows = row_titles(cap, queries)
    canvas = Image.new("RGB", layout.size(1 + len(rows), kt), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(_title(cap)):
        _text(draw, (4, 3 + 13 * i), line)
    _text(draw, (4, layout.origin(0, 0)[1] + 4), "frames")
    for col in range(kt):
        dt = col - kt // 2
        _draw_frame(canvas, cap, layout, 0, col, cap.query[0] + dt, with_query=dt == 0)
    fig = Figure(canvas)
    for r, (kind, q) in enumerate(rows, start=1):
        kernel = cap.kernels[kind][q]  # (t, h, w)
        vmax = float(kernel.abs().max())
        y = layout.origin(r, 0)[1]
        _text(draw, (4, y + 4), f"{_KIND_TITLES[kind]} q{q}")
        _text(draw, (4, y + 18), f"|max| {vmax:.3g}")
        for col in range(kt):
            x, y = layout.origin(r, col)
            ox, oy, block = _draw_heatmap(canvas, kernel[col], vmax, x, y, layout.cell)
            fig.heatmaps.append(HeatmapCell(kind, q, col, ox, oy, block, vmax))
    return fig


def render_clip(cap: KernelCapture, layout: Layout = Layout()) -> Figure:
    """All input frames in one row; the window's frames carry the context, the query frame the query."""
    num_frames = cap.feature_shape[0]
    canvas = Image.new("RGB", layout.size(1, num_frames), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(_title(cap)):
        _text(draw, (4, 3 + 13 * i), line)
    _text(draw, (4, layout.origin(0, 0)[1] + 4), "clip")
    kt = cap.kernel_size[0]
    lo, hi = cap.query[0] - kt // 2, cap.query[0] + (kt - 1) // 2
    for t in range(num_frames):
        if lo <= t <= hi:
            _draw_frame(canvas, cap, layout, 0, t, t, with_query=t == cap.query[0])
        else:
            x, y = layout.origin(0, t)
            canvas.paste(_frame_cell(cap.frames[_frame_index(cap, t)], layout.cell), (x, y))
            _text(draw, (x + 3, y + 2), f"t={t}", fill=(255, 255, 255), stroke=True)
    return Figure(canvas)
