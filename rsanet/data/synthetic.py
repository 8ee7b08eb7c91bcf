"""Built-in synthetic motion benchmark: procedurally generated clips whose classes differ only in motion.

A video shows a random textured scene and, in front of it, one random object (asymmetric shape, random
colours, internal stripes and a spot) at a random place. The eight classes are

    background moving left / right / up / down   (the scene translates; the camera pans or tilts)
    background rotating clockwise / counter-clockwise   (the scene turns about the frame centre; camera roll)
    object approaching / receding   (the object grows / shrinks; its size wraps from largest to smallest)

Four pose variables describe a frame: the background's x and y offsets, its rotation angle about the
frame centre, and the object's log-scale. A class makes one variable move at constant speed, in one
direction, over the whole clip. Everything else is drawn from ``(seed, split, index)`` only, never from the
label, so that **a single frame carries no information about the class**:

* The background is a stationary and isotropic random field (a sum of sinusoids with uniformly random
  directions and phases). Shifted by any offset or turned by any angle it has exactly the same
  distribution, so a frame tells nothing about where the background is or how far it has turned.
* The object's log-scale lives on a circle; its grid of ``T`` values ``z0 + v * (j - (T - 1) / 2)`` starts at
  a uniformly random ``z0``, so its size in frame ``t`` is uniform on the circle whatever the class. When
  the class is not about size, the object shows the *same* ``T`` sizes in a uniformly random order (it
  flickers), so the set of sizes in a clip is also the same under every label.
* The object's place, orientation, shape and colours, and the background's pattern, are fixed per video.

Hence (proved in ``tests/test_synthetic.py``): every frame has the same distribution under every class at
every time step, whatever frame sampler is used; a clip and its time reversal are the two classes of a
pair (left/right, up/down, clockwise/counter-clockwise, approaching/receding), so each pair shows exactly
the same frames in opposite orders; and the object looks exactly the same set of ways under every label.
A frame-averaging model (TSN with 2D convolutions) is therefore at chance by construction. The only
thing that differs between clips of different pairs is how *consecutive* frames relate: motion.

``synthetic_classes: K`` keeps the first K classes; pose variables that none of them uses stay still
(``K = 2`` is background moving left vs right). Splits ``train``, ``val`` and ``test`` are independent random
streams of the same distribution (``test`` is its own held-out set of ``data.val_size`` clips). Nothing is
written to disk: a record's path is ``synthetic://<split>/<index>``, and frames are rendered on request.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from rsanet.data.records import VideoRecord

__all__ = ["CLASS_NAMES", "NUM_VARS", "SPLITS", "SyntheticSpec", "SyntheticDecoder", "VideoContent",
           "build_synthetic", "class_motion", "make_content", "row_order", "clip_states", "render_background",
           "render_object", "render_frames", "render_clip", "video_label"]

# Class names in label order; ``synthetic_classes: K`` keeps the first K.
CLASS_NAMES = (
    "background moving left", "background moving right", "background moving up", "background moving down",
    "background rotating clockwise", "background rotating counter-clockwise", "object approaching",
    "object receding",
)
# (pose variable, direction) per class. Variables: 0 = background x offset (content moves right when it
# grows), 1 = background y offset (down when it grows: image rows), 2 = background angle about the frame
# centre (clockwise on screen when it grows, since image y points down), 3 = object log-scale (grows).
_MOTIONS = ((0, -1), (0, 1), (1, -1), (1, 1), (2, 1), (2, -1), (3, 1), (3, -1))
NUM_VARS = 4
# Non-class variables that a single frame shows (the object's size) are shuffled; the background's pose
# cannot be seen in a single frame, so its non-class variables simply stay still.
_SHUFFLED = (False, False, False, True)
SPLITS = {"train": 0, "val": 1, "test": 2}  # split name -> seed stream; test is its own stream
_PATH = re.compile(r"^synthetic://(train|val|test)/(\d+)$")

# Appearance and motion (lengths are fractions of min(H, W) unless said otherwise).
_BASE_RADIUS = 0.13  # object radius at the smallest size
_SCALE_PERIOD = math.log(2.8)  # log-scale circle: the radius goes from 1x to 2.8x, then wraps back to 1x
# Travel of each pose variable over a clip (and the span its values cover when shuffled): background
# offset (fraction of the frame), background angle (radians), object log-scale (fraction of its period).
_TRAVEL = (0.7, 0.7, 1.6, 0.9)
_SPEED_JITTER = (0.75, 1.25)  # per-video factor on every travel
_BG_WAVES = 12  # sinusoids of the background field
_BG_CYCLES = (1.0, 4.0)  # their spatial frequencies, in cycles per frame side (log-uniform)
_BG_CONTRAST = (0.15, 0.25)  # standard deviation of the background's brightness


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
        """(4,) bool: the pose variables that some class of this spec is defined by (the others stay still)."""
        act = np.zeros(NUM_VARS, dtype=bool)
        for var, _ in _MOTIONS[: self.num_classes]:
            act[var] = True
        return act

    @property
    def side(self) -> int:
        return min(self.height, self.width)


def video_label(spec: SyntheticSpec, index: int) -> int:
    """Label of video ``index`` (balanced: index modulo the number of classes)."""
    return int(index) % spec.num_classes


@dataclass
class VideoContent:
    """Label-independent content of one video: scene, object, and the T rows of pose values."""

    waves: np.ndarray  # (K, 4) float64: background sinusoids: frequency x, frequency y (cycles/px), phase, -
    amplitudes: np.ndarray  # (K, 3) float32: RGB amplitude of each sinusoid
    mean: np.ndarray  # (3,) float32: background mean colour
    colors: np.ndarray  # (3, 3) float32: object stripe colour A, stripe colour B, spot colour
    shape: np.ndarray  # (7,) a1, a2, a3 harmonic amplitudes, p1, p2, p3 phases, stripe wavelength (radii)
    spot: np.ndarray  # (3,) spot centre u, v and radius, in units of the object radius
    stripe_phase: float  # phase of the object's stripes
    place: np.ndarray  # (3,) object centre x, y (pixels) and orientation (radians)
    z0: np.ndarray  # (4,) start of every pose variable's grid (the still value of unused variables)
    grid: np.ndarray  # (T, 4) int: grid index of every variable in every row (independent permutations)
    values: np.ndarray  # (T, 4) float64: pose of every row (bg x px, bg y px, bg angle rad, object log-scale)


def _rng(spec: SyntheticSpec, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {sorted(SPLITS)}")
    if index < 0:
        raise ValueError(f"synthetic video index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence([int(spec.seed) & 0xFFFFFFFF, SPLITS[split], int(index)]))


def _background(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stationary, isotropic random field: K sinusoids with uniform directions and phases, log-uniform
    frequencies, mostly-grey amplitudes (a little colour). Returns waves (K, 4), amplitudes (K, 3), mean (3,)."""
    k = _BG_WAVES
    cycles = np.exp(rng.uniform(*np.log(_BG_CYCLES), size=k)) / side  # cycles per pixel
    direction = rng.uniform(0, 2 * math.pi, size=k)
    waves = np.stack([cycles * np.cos(direction), cycles * np.sin(direction), rng.uniform(0, 2 * math.pi, size=k),
                      np.zeros(k)], axis=1)  # (K, 4)
    amp = rng.normal(size=(k, 1)) + 0.35 * rng.normal(size=(k, 3))  # (K, 3): grey plus some colour
    amp *= rng.uniform(*_BG_CONTRAST) / math.sqrt(float((amp ** 2).sum(0).mean()) / 2)  # brightness std
    mean = rng.uniform(0.3, 0.7, size=3)
    return waves, amp.astype(np.float32), mean.astype(np.float32)


def _colors(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """Object colours A, B and the spot colour, with the mean object brightness away from the background."""
    lum = np.array([0.299, 0.587, 0.114])
    bg_lum = float(background_mean @ lum)
    a = rng.uniform(0.0, 1.0, size=3)
    b = np.clip(a + rng.uniform(-0.35, 0.35, size=3), 0.0, 1.0)
    if abs((a + b) / 2 @ lum - bg_lum) < 0.3:  # too close to the background: push to the other end
        shift = 0.5 if bg_lum < 0.5 else -0.5
        a, b = np.clip(a + shift, 0, 1), np.clip(b + shift, 0, 1)
    spot = 1.0 - (a + b) / 2  # contrasting spot
    return np.stack([a, b, spot]).astype(np.float32)  # (3, 3)


def make_content(spec: SyntheticSpec, split: str, index: int) -> VideoContent:
    """Draw the label-independent content of video ``index`` of ``split`` (deterministic)."""
    rng = _rng(spec, split, index)
    t, side = spec.frames, spec.side
    waves, amplitudes, mean = _background(rng, side)
    colors = _colors(rng, mean)
    shape = np.concatenate([
        [rng.uniform(0.1, 0.2), rng.uniform(0.1, 0.15), rng.uniform(0.0, 0.05)],  # a1, a2, a3
        rng.uniform(0, 2 * math.pi, size=3),  # p1, p2, p3
        [rng.uniform(0.5, 1.0)],  # stripe wavelength (object radii)
    ])
    spot = np.array([rng.uniform(0.3, 0.5), rng.uniform(-0.25, 0.25), rng.uniform(0.18, 0.28)])
    stripe_phase = float(rng.uniform(0, 2 * math.pi))
    place = np.array([rng.uniform(0, spec.width), rng.uniform(0, spec.height), rng.uniform(0, 2 * math.pi)])
    # The background's variables start at 0: its field looks the same shifted or turned by any amount, so a
    # random start would add nothing; with the angle at 0 a shift moves the scene along the screen axes, and
    # with the offset at 0 a turn is about the frame centre. The log-scale must start
    # uniformly on its circle so that the object's size in every frame is uniform.
    z0 = np.array([0.0, 0.0, 0.0, rng.uniform(0, _SCALE_PERIOD)])
    travel = np.array(_TRAVEL) * np.array([side, side, 1.0, _SCALE_PERIOD])
    speed = travel / t * rng.uniform(*_SPEED_JITTER, size=NUM_VARS) * spec.active  # (4,) per frame; 0 = still
    grid = np.stack([rng.permutation(t) for _ in range(NUM_VARS)], axis=1)  # (T, 4)
    values = z0 + speed * (grid - (t - 1) / 2.0)  # (T, 4)
    values[:, 3] = np.mod(values[:, 3], _SCALE_PERIOD)
    return VideoContent(waves, amplitudes, mean, colors, shape, spot, stripe_phase, place, z0, grid, values)


def row_order(content: VideoContent, label: int) -> np.ndarray:
    """(T,) row shown at each time step for ``label``: rows sorted by the class variable's grid index."""
    var, direction = class_motion(label)
    order = np.argsort(content.grid[:, var], kind="stable")  # row with grid index 0, 1, ...
    return order if direction > 0 else order[::-1].copy()


def clip_states(content: VideoContent, label: int) -> np.ndarray:
    """(T, 4) pose per time step (bg x px, bg y px, bg angle rad, object log-scale) of the clip of ``label``.

    The class variable moves at constant speed; the object's log-scale, when it is not the class variable,
    takes its T values in the random row order; the background's other variables stay at their start.
    """
    var, _ = class_motion(label)
    states = content.values[row_order(content, label)].copy()
    for k in range(NUM_VARS):
        if k != var and not _SHUFFLED[k]:
            states[:, k] = content.z0[k]
    return states


def render_background(spec: SyntheticSpec, content: VideoContent, states: np.ndarray) -> np.ndarray:
    """The background field under poses ``states`` (n, 4): float32 (n, H, W, 3).

    Pixel p shows the field at ``c + R(-angle) (p - c) - offset`` (c: frame centre), i.e. the scene shifted by
    the offset and turned by the angle about the centre.
    """
    h, w = spec.height, spec.width
    n = states.shape[0]
    fx, fy, phase = content.waves[:, 0], content.waves[:, 1], content.waves[:, 2]  # (K,) each
    cx, cy = w / 2.0, h / 2.0
    c, s = np.cos(states[:, 2])[:, None], np.sin(states[:, 2])[:, None]  # (n, 1)
    # cos(2 pi f . q + phase) with q = c + R(-a)(p - c) - b = a linear function of p: per frame and wave,
    # the rotated frequency (gx, gy) and a phase; the field is then cos(gx x' + gy y' + ph), x' = x - cx.
    gx = 2 * math.pi * (fx * c - fy * s)  # (n, K)
    gy = 2 * math.pi * (fx * s + fy * c)
    bx, by = states[:, 0:1], states[:, 1:2]  # (n, 1)
    ph = 2 * math.pi * (fx * (cx - bx) + fy * (cy - by)) + phase  # (n, K)
    xs = np.arange(w) + 0.5 - cx  # (W,)
    ys = np.arange(h) + 0.5 - cy  # (H,)
    ax = gx[..., None] * xs + ph[..., None]  # (n, K, W)
    ay = gy[..., None] * ys  # (n, K, H)
    f32 = np.float32
    cos_x, sin_x = np.cos(ax).astype(f32)[:, None], np.sin(ax).astype(f32)[:, None]  # (n, 1, K, W)
    amp = content.amplitudes.T[None, :, None, :]  # (K, 3) -> (1, 3, 1, K)
    cos_y = np.cos(ay).astype(f32).transpose(0, 2, 1)[:, None] * amp  # (n, K, H) -> (n, 1, H, K) -> (n, 3, H, K)
    sin_y = np.sin(ay).astype(f32).transpose(0, 2, 1)[:, None] * amp
    # cos(A + B) = cos A cos B - sin A sin B, summed over the K waves as two batched matrix products:
    # (n, 3, H, K) @ (n, 1, K, W) -> (n, 3, H, W)
    field = cos_y @ cos_x - sin_y @ sin_x
    return field.transpose(0, 2, 3, 1) + content.mean  # (n, 3, H, W) -> (n, H, W, 3)


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


def render_object(spec: SyntheticSpec, content: VideoContent, log_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object at log-scales ``log_scale`` (n,): colour float32 (n, H, W, 3) and coverage (n, H, W, 1).

    The object sits at ``content.place``; the image is a torus for it (it wraps around the borders).
    """
    h, w = spec.height, spec.width
    n = log_scale.shape[0]
    f32 = np.float32
    cx, cy, ang = (f32(x) for x in content.place)
    ys = np.arange(h, dtype=f32).reshape(1, h, 1) + f32(0.5)  # (1, H, 1) pixel centres
    xs = np.arange(w, dtype=f32).reshape(1, 1, w) + f32(0.5)  # (1, 1, W)
    dx = np.mod(xs - cx + f32(w / 2), f32(w)) - f32(w / 2)  # (1, 1, W) shortest offset on the torus
    dy = np.mod(ys - cy + f32(h / 2), f32(h)) - f32(h / 2)  # (1, H, 1)
    c, s = f32(math.cos(ang)), f32(math.sin(ang))
    u = np.broadcast_to(c * dx + s * dy, (1, h, w))  # (1, H, W) object-frame coordinates (rotated by -angle)
    v = np.broadcast_to(c * dy - s * dx, (1, h, w))
    radius = f32(_BASE_RADIUS * spec.side) * np.exp(log_scale.astype(f32)).reshape(n, 1, 1)  # (n, 1, 1) pixels
    rho = np.sqrt(u * u + v * v)
    edge = radius * _harmonics(u, v, rho, content.shape)  # (n, H, W)
    alpha = np.clip(edge - rho + f32(0.5), 0.0, 1.0)[..., None]  # (n, H, W, 1) anti-aliased coverage
    stripe = f32(0.5) + f32(0.5) * np.cos(u * (f32(2 * math.pi / content.shape[6]) / radius) + f32(content.stripe_phase))
    col_a, col_b, col_spot = content.colors
    obj = col_b + stripe[..., None] * (col_a - col_b)  # (n, H, W, 3)
    su, sv, sr = (f32(x) for x in content.spot)
    du, dv = u - su * radius, v - sv * radius
    spot_alpha = np.clip(sr * radius - np.sqrt(du * du + dv * dv) + f32(0.5), 0.0, 1.0)[..., None]
    obj += spot_alpha * (col_spot - obj)
    return obj, alpha


def render_frames(spec: SyntheticSpec, content: VideoContent, states: np.ndarray) -> np.ndarray:
    """Render poses ``states`` (n, 4): uint8 (n, H, W, 3)."""
    background = render_background(spec, content, states)
    obj, alpha = render_object(spec, content, states[:, 3])
    frames = background + alpha * (obj - background)  # (n, H, W, 3)
    return np.clip(frames * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)


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
