"""Built-in synthetic motion benchmark: procedurally generated clips whose classes differ only in motion.

Every video shows one random object (asymmetric shape, random colours, internal stripes and a spot) over a
static random textured background. The object has four pose variables, each on a circle: horizontal and
vertical position (the image is a torus: the object wraps around the borders), orientation, and log-scale
(the size wraps from largest back to smallest). The eight classes are

    moving left / right (x), moving up / down (y), rotating clockwise / counter-clockwise (angle),
    approaching / receding (log-scale).

How a video is made (everything below is drawn from ``(seed, split, index)`` only, never from the label):

* background, object appearance, a random offset ``z0`` and a random speed ``v`` for every pose variable;
* ``T`` *rows*. Row ``r`` gives variable ``k`` the grid value ``z0_k + v_k * (pi_k(r) - (T - 1) / 2)``
  (modulo its period), with one independent uniformly random permutation ``pi_k`` per variable.

The label only chooses the **order** in which the ``T`` rows are shown: a video of class "moving right"
shows the rows sorted by increasing x grid index (so x moves at constant speed), "moving left" the same rows
in reverse, and so on. Every other active variable then visits its grid values in a uniformly random order
(the object jitters in those respects). Consequences, proved in ``tests/test_synthetic.py``:

1. *Exactly the same frames under every label.* Rendering index ``i`` under any label gives the same
   multiset of frames, only the order differs. Any model that is blind to frame order (TSN with 2D
   convolutions averages per-frame logits; BatchNorm statistics are also order-blind) computes the same
   output whatever the label, so it is at chance by construction, not only in expectation.
2. *Every single frame has the same distribution under every class, at every time step*: the offsets
   ``z0`` are uniform on each circle, so each pose variable of frame ``t`` is uniform whatever the order.
   This holds for any frame sampler (random segment offsets included).

Property 1 needs the model to see every generated frame (``data.synthetic_frames == model.num_segments``,
as in ``configs/synthetic/``); with more generated frames than segments, the sampled subset is no longer an
exact permutation, though property 2 still holds exactly.

Pose variables that no class of the chosen class set uses stay static (``synthetic_classes: 2`` is left vs
right with a rigid object; 8 classes make x, y, angle and scale all move). Splits ``train``, ``val`` and
``test`` are independent random streams of the same distribution (``test`` is its own held-out set of
``data.val_size`` clips). Nothing is written to disk: a record's path is ``synthetic://<split>/<index>``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from rsanet.data.records import VideoRecord

__all__ = ["CLASS_NAMES", "SPLITS", "SyntheticSpec", "SyntheticDecoder", "VideoContent", "build_synthetic",
           "class_motion", "make_content", "row_order", "clip_states", "render_frames", "render_clip",
           "video_label"]

# Class names in label order; ``synthetic_classes: K`` keeps the first K.
CLASS_NAMES = (
    "moving left", "moving right", "moving up", "moving down",
    "rotating clockwise", "rotating counter-clockwise", "approaching", "receding",
)
# (pose variable, direction) per class. Variables: 0 = x (right is +), 1 = y (down is +, image rows),
# 2 = angle (clockwise on screen is +, since image y points down), 3 = log-scale (growing is +).
_MOTIONS = ((0, -1), (0, 1), (1, -1), (1, 1), (2, 1), (2, -1), (3, 1), (3, -1))
NUM_VARS = 4
SPLITS = {"train": 0, "val": 1, "test": 2}  # split name -> seed stream; test is its own stream
_PATH = re.compile(r"^synthetic://(train|val|test)/(\d+)$")

# Appearance and motion ranges (fractions of the frame unless said otherwise).
_BASE_RADIUS = 0.12  # object radius at the smallest scale, as a fraction of min(H, W)
_SCALE_PERIOD = math.log(2.5)  # log-scale circle: the radius goes from 1x to 2.5x, then wraps back to 1x
# Span of the T grid values of each pose variable in one video (the travel of the class variable over the
# clip, and the range its shuffled values cover otherwise): x and y as fractions of W and H, angle in
# radians, log-scale as a fraction of its period.
_RANGES = (0.5, 0.5, 3.0, 0.75 * _SCALE_PERIOD)
_SPEED_JITTER = (0.75, 1.25)  # per-video factor on every span
_BG_CONTRAST = (0.1, 0.3)  # range of the background's colour-noise contrast


def class_motion(label: int) -> tuple[int, int]:
    """(pose variable, direction) of a class index."""
    return _MOTIONS[label]


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that defines the benchmark: seed, frames per video, frame size and number of classes."""

    seed: int = 0
    frames: int = 8
    height: int = 64
    width: int = 64
    num_classes: int = 8

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(CLASS_NAMES):
            raise ValueError(f"data.synthetic_classes must be in 2..{len(CLASS_NAMES)}, got {self.num_classes}")
        if self.frames < 2:
            raise ValueError(f"data.synthetic_frames must be at least 2, got {self.frames}")
        if self.height < 16 or self.width < 16:
            raise ValueError(f"data.synthetic_resolution must be at least [16, 16], got "
                             f"[{self.height}, {self.width}]")

    @classmethod
    def from_config(cls, cfg) -> "SyntheticSpec":
        """Spec from a full :class:`rsanet.config.Config` (reads the ``data.synthetic_*`` keys)."""
        d = cfg.data
        h, w = d.synthetic_resolution
        return cls(seed=d.synthetic_seed, frames=d.synthetic_frames, height=h, width=w,
                   num_classes=d.synthetic_classes)

    @property
    def classes(self) -> list[str]:
        return list(CLASS_NAMES[: self.num_classes])

    @property
    def active(self) -> np.ndarray:
        """(4,) bool: the pose variables that some class of this spec is defined by (the others stay static)."""
        act = np.zeros(NUM_VARS, dtype=bool)
        for var, _ in _MOTIONS[: self.num_classes]:
            act[var] = True
        return act

    @property
    def periods(self) -> np.ndarray:
        """(4,) period of each pose variable: W and H pixels, 2 pi, and the log-scale period."""
        return np.array([self.width, self.height, 2 * math.pi, _SCALE_PERIOD])


def video_label(spec: SyntheticSpec, index: int) -> int:
    """Label of video ``index`` (balanced: index modulo the number of classes)."""
    return int(index) % spec.num_classes


@dataclass
class VideoContent:
    """Label-independent content of one video: background, object appearance, and the T pose rows."""

    background: np.ndarray  # (H, W, 3) float32 in [0, 1]
    colors: np.ndarray  # (3, 3) float32: stripe colour A, stripe colour B, spot colour
    shape: np.ndarray  # (7,) a1, a2, a3 harmonic amplitudes, p1, p2, p3 phases, stripe wavelength
    spot: np.ndarray  # (3,) spot centre u, v and radius, in units of the object radius
    stripe_phase: float  # phase of the internal stripes
    grid: np.ndarray  # (T, 4) int: grid index of every variable in every row (independent permutations)
    values: np.ndarray  # (T, 4) float64: pose of every row (x px, y px, angle rad, log-scale)


def _rng(spec: SyntheticSpec, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {sorted(SPLITS)}")
    if index < 0:
        raise ValueError(f"synthetic video index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence([int(spec.seed) & 0xFFFFFFFF, SPLITS[split], int(index)]))


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a (gh, gw, 3) grid to (h, w, 3) as two small matrix products."""
    def weights(n_out: int, n_in: int) -> np.ndarray:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = pos - lo
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), lo] += 1 - frac
        m[np.arange(n_out), hi] += frac
        return m  # (n_out, n_in)

    gh, gw, _ = grid.shape
    rows = weights(h, gh) @ grid.reshape(gh, gw * 3)  # (h, gh) @ (gh, gw*3) -> (h, gw*3)
    rows = rows.reshape(h, gw, 3).transpose(0, 2, 1)  # (h, gw*3) -> (h, gw, 3) -> (h, 3, gw)
    out = rows @ weights(w, gw).T  # (h, 3, gw) @ (gw, w) -> (h, 3, w)
    return out.transpose(0, 2, 1)  # (h, 3, w) -> (h, w, 3)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Static textured background: smooth colour noise around a random mean colour, plus faint stripes."""
    g = int(rng.integers(3, 9))
    noise = _upsample(rng.uniform(-0.5, 0.5, size=(g, g, 3)), h, w)  # (h, w, 3)
    mean = rng.uniform(0.2, 0.8, size=3)
    contrast = rng.uniform(*_BG_CONTRAST)
    ang = rng.uniform(0, math.pi)
    freq = rng.uniform(0.05, 0.3)  # cycles per pixel
    # cos(a x + b y + c) = cos(a x + c) cos(b y) - sin(a x + c) sin(b y): two 1-D tables, one outer product
    ax = 2 * math.pi * freq * math.cos(ang) * np.arange(w) + rng.uniform(0, 2 * math.pi)  # (w,)
    by = 2 * math.pi * freq * math.sin(ang) * np.arange(h)  # (h,)
    stripes = np.outer(np.cos(by), np.cos(ax)) - np.outer(np.sin(by), np.sin(ax))  # (h, w)
    tint = rng.uniform(-1.0, 1.0, size=3)
    bg = mean + contrast * noise + rng.uniform(0.03, 0.12) * stripes[..., None] * tint  # (h, w, 3)
    return np.clip(bg, 0.0, 1.0).astype(np.float32)


def _colors(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """Object colours A, B and the spot colour, with the mean object brightness away from the background."""
    lum = np.array([0.299, 0.587, 0.114])
    bg_lum = float(background.reshape(-1, 3).mean(0) @ lum)
    a = rng.uniform(0.0, 1.0, size=3)
    b = np.clip(a + rng.uniform(-0.35, 0.35, size=3), 0.0, 1.0)
    if abs((a + b) / 2 @ lum - bg_lum) < 0.25:  # too close to the background: push to the other end
        shift = 0.45 if bg_lum < 0.5 else -0.45
        a, b = np.clip(a + shift, 0, 1), np.clip(b + shift, 0, 1)
    spot = 1.0 - (a + b) / 2  # contrasting spot
    return np.stack([a, b, spot]).astype(np.float32)  # (3, 3)


def make_content(spec: SyntheticSpec, split: str, index: int) -> VideoContent:
    """Draw the label-independent content of video ``index`` of ``split`` (deterministic)."""
    rng = _rng(spec, split, index)
    t = spec.frames
    background = _background(rng, spec.height, spec.width)
    colors = _colors(rng, background)
    shape = np.concatenate([
        [rng.uniform(0.15, 0.25), rng.uniform(0.15, 0.25), rng.uniform(0.0, 0.1)],  # a1, a2, a3
        rng.uniform(0, 2 * math.pi, size=3),  # p1, p2, p3
        [rng.uniform(0.5, 1.0)],  # stripe wavelength (object radii)
    ])
    spot = np.array([rng.uniform(0.3, 0.55), rng.uniform(-0.25, 0.25), rng.uniform(0.18, 0.28)])
    stripe_phase = float(rng.uniform(0, 2 * math.pi))
    periods = spec.periods
    z0 = rng.uniform(0.0, 1.0, size=NUM_VARS) * periods  # uniform on every circle
    ranges = np.array(_RANGES) * np.array([spec.width, spec.height, 1.0, 1.0])
    speed = ranges / t * rng.uniform(*_SPEED_JITTER, size=NUM_VARS) * spec.active  # (4,) per frame; 0 = static
    grid = np.stack([rng.permutation(t) for _ in range(NUM_VARS)], axis=1)  # (T, 4)
    values = np.mod(z0 + speed * (grid - (t - 1) / 2.0), periods)  # (T, 4)
    return VideoContent(background, colors, shape, spot, stripe_phase, grid, values)


def row_order(content: VideoContent, label: int) -> np.ndarray:
    """(T,) row shown at each time step for ``label``: rows sorted by the class variable's grid index."""
    var, direction = class_motion(label)
    order = np.argsort(content.grid[:, var], kind="stable")  # row with grid index 0, 1, ...
    return order if direction > 0 else order[::-1].copy()


def clip_states(content: VideoContent, label: int) -> np.ndarray:
    """(T, 4) pose per time step (x px, y px, angle rad, log-scale) of the video shown as ``label``."""
    return content.values[row_order(content, label)]


def _harmonics(u: np.ndarray, v: np.ndarray, rho: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """1 + sum_k a_k cos(k (phi - p_k)) for k = 1..3, phi = atan2(v, u), via Chebyshev identities (no atan2)."""
    a1, a2, a3, p1, p2, p3 = (float(x) for x in shape[:6])
    inv = 1.0 / np.maximum(rho, 1e-6)
    c1, s1 = u * inv, v * inv  # cos(phi), sin(phi)
    c2, s2 = c1 * c1 - s1 * s1, 2 * s1 * c1  # cos(2 phi), sin(2 phi)
    c3, s3 = c1 * (4 * c1 * c1 - 3), s1 * (3 - 4 * s1 * s1)  # cos(3 phi), sin(3 phi)
    out = 1 + a1 * (c1 * math.cos(p1) + s1 * math.sin(p1))
    out += a2 * (c2 * math.cos(2 * p2) + s2 * math.sin(2 * p2))
    out += a3 * (c3 * math.cos(3 * p3) + s3 * math.sin(3 * p3))
    return out


def render_frames(spec: SyntheticSpec, content: VideoContent, states: np.ndarray) -> np.ndarray:
    """Render poses ``states`` (n, 4) over the content's background: uint8 (n, H, W, 3)."""
    h, w = spec.height, spec.width
    n = states.shape[0]
    f32 = np.float32
    cx, cy, ang, logs = (states[:, i].astype(f32).reshape(n, 1, 1) for i in range(NUM_VARS))  # (n, 1, 1) each
    ys = np.arange(h, dtype=f32).reshape(1, h, 1) + f32(0.5)  # (1, H, 1) pixel centres
    xs = np.arange(w, dtype=f32).reshape(1, 1, w) + f32(0.5)  # (1, 1, W)
    dx = np.mod(xs - cx + f32(w / 2), f32(w)) - f32(w / 2)  # (n, 1, W) shortest offset on the torus
    dy = np.mod(ys - cy + f32(h / 2), f32(h)) - f32(h / 2)  # (n, H, 1)
    c, s = np.cos(ang), np.sin(ang)
    u = c * dx + s * dy  # (n, H, W) object-frame coordinates (rotated by -angle)
    v = c * dy - s * dx
    radius = f32(_BASE_RADIUS * min(h, w)) * np.exp(logs)  # (n, 1, 1) pixels
    rho = np.sqrt(u * u + v * v)
    edge = radius * _harmonics(u, v, rho, content.shape)
    alpha = np.clip(edge - rho + f32(0.5), 0.0, 1.0)[..., None]  # (n, H, W, 1) anti-aliased coverage
    stripe = f32(0.5) + f32(0.5) * np.cos(u * (f32(2 * math.pi / content.shape[6]) / radius) + f32(content.stripe_phase))
    col_a, col_b, col_spot = content.colors
    obj = col_b + stripe[..., None] * (col_a - col_b)  # (n, H, W, 3)
    su, sv, sr = (f32(x) for x in content.spot)
    du, dv = u - su * radius, v - sv * radius
    spot_alpha = np.clip(sr * radius - np.sqrt(du * du + dv * dv) + f32(0.5), 0.0, 1.0)[..., None]
    obj += spot_alpha * (col_spot - obj)
    frames = content.background[None] + alpha * (obj - content.background[None])  # (n, H, W, 3)
    return np.clip(frames * f32(255.0) + f32(0.5), 0, 255).astype(np.uint8)


def render_clip(spec: SyntheticSpec, split: str, index: int, label: Optional[int] = None,
                indices: Optional[Sequence[int]] = None) -> np.ndarray:
    """Frames ``indices`` (default: all) of video ``index`` of ``split``: uint8 (n, H, W, 3).

    ``label`` defaults to the video's own label; passing another label renders the counterfactual video
    (same content, the rows in the order of that class), which is what the tests compare.
    """
    label = video_label(spec, index) if label is None else int(label)
    if not 0 <= label < spec.num_classes:
        raise ValueError(f"label {label} is outside 0..{spec.num_classes - 1}")
    content = make_content(spec, split, index)
    states = clip_states(content, label)
    if indices is not None:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= spec.frames):
            raise IndexError(f"synthetic://{split}/{index}: frame indices {idx.tolist()} outside 0..{spec.frames - 1}")
        states = states[idx]
    return render_frames(spec, content, states)


class SyntheticDecoder:
    """Decoder for ``synthetic://<split>/<index>`` records: renders the requested frames on the fly."""

    def __init__(self, spec: SyntheticSpec):
        self.spec = spec

    def decode(self, record: VideoRecord, indices: Sequence[int]) -> np.ndarray:
        m = _PATH.match(record.path)
        if m is None:
            raise ValueError(f"not a synthetic video path: {record.path!r} (expected synthetic://<split>/<index>)")
        return render_clip(self.spec, m.group(1), int(m.group(2)), indices=indices)


def build_synthetic(cfg, split: str) -> tuple[list[VideoRecord], SyntheticDecoder, list[str]]:
    """Records, decoder and class names of a synthetic split (``train``: data.train_size clips, ``val`` and
    ``test``: data.val_size clips each, from independent seed streams)."""
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {sorted(SPLITS)}")
    spec = SyntheticSpec.from_config(cfg)
    size = cfg.data.train_size if split == "train" else cfg.data.val_size
    records = [
        VideoRecord(path=f"synthetic://{split}/{i}", num_frames=spec.frames, label=video_label(spec, i),
                    video_id=f"{split}/{i}")
        for i in range(size)
    ]
    return records, SyntheticDecoder(spec), spec.classes
