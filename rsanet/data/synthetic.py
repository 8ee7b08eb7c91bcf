"""Built-in synthetic motion benchmark: procedurally generated clips whose classes differ only in motion.

A video shows a random textured scene and, in front of it, one random still object (asymmetric shape,
random colours, internal stripes and a spot). The camera moves; the eight classes are

    background moving left / right / up / down          (the camera pans or tilts)
    background rotating clockwise / counter-clockwise   (the camera rolls about the frame centre)
    background approaching / receding                   (the camera zooms in / out about the frame centre)

Four pose variables describe a frame: the scene's x and y offsets, its angle, and its log-zoom. A class
moves one of them at constant speed, in one direction, over the whole clip; the others stay at 0.
Everything else is drawn from ``(seed, split, index)`` only, never from the label, and a **single frame
carries no information about the pose**, hence none about the class:

* The scene is a random field: a sum of ``K`` sinusoids with uniformly random directions and phases, so a
  shifted or turned scene has exactly the same distribution as the original.
* Zoom uses a "Shepard" construction: the log-frequency of every sinusoid lives on a circle of period
  ``P`` (frequencies from ``1`` to ``e^P`` cycles per frame side) with a uniformly random start, and its
  amplitude is a raised-cosine window of that log-frequency that is 0 where the circle wraps. Zooming in by
  ``z`` lowers every log-frequency by ``z`` (modulo ``P``): waves grow, fade out at the bottom of the range and
  fade in at the top, so the scene can zoom for ever and every zoom state has the same distribution.
* The object's place, size, orientation, shape and colours are fixed per video.

Hence (proved in ``tests/test_synthetic.py``): every frame has the same distribution under every class at
every time step, whatever frame sampler is used; a clip and its time reversal are the two classes of a
pair (left/right, up/down, clockwise/counter-clockwise, approaching/receding), so each pair shows exactly
the same frames in opposite orders. A frame-averaging model (TSN with 2D convolutions) is therefore at
chance by construction; the only thing that differs between classes is how *consecutive* frames relate.

``data.synthetic.classes: K`` keeps the first K classes (``K = 2`` is background moving left vs right). Splits
``train``, ``val`` and ``test`` are independent random streams of the same distribution (``test`` is its own
held-out set of ``data.synthetic.val_size`` clips). Nothing is written to disk: a record's path is
``synthetic://<split>/<index>``, and frames are rendered on request. The dataset around this generator (its
config section, records and splits) is :mod:`rsanet.data.sets.synthetic`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from rsanet.data.records import VideoRecord

__all__ = ["CLASS_NAMES", "NUM_VARS", "SPLITS", "SyntheticSpec", "SyntheticDecoder", "VideoContent",
           "class_motion", "make_content", "clip_states", "render_background", "render_object",
           "render_frames", "render_clip", "video_label"]

# Class names in label order; ``data.synthetic.classes: K`` keeps the first K.
CLASS_NAMES = (
    "background moving left", "background moving right", "background moving up", "background moving down",
    "background rotating clockwise", "background rotating counter-clockwise", "background approaching",
    "background receding",
)
# (pose variable, direction) per class. Variables: 0 = x offset (the scene moves right when it grows), 1 = y
# offset (down when it grows: image rows), 2 = angle (clockwise on screen when it grows, since image y points
# down), 3 = log-zoom (the scene grows, i.e. approaches, when it grows).
_MOTIONS = ((0, -1), (0, 1), (1, -1), (1, 1), (2, 1), (2, -1), (3, 1), (3, -1))
NUM_VARS = 4
SPLITS = {"train": 0, "val": 1, "test": 2}  # split name -> seed stream; test is its own stream
_PATH = re.compile(r"^synthetic://(train|val|test)/(\d+)$")

# Motion: travel of each pose variable over a clip, as offsets in fractions of min(H, W), the angle in
# radians and the log-zoom in natural-log units (1.6 = the scene grows 5x over the clip).
_TRAVEL = (0.7, 0.7, 1.6, 1.6)
_SPEED_JITTER = (0.75, 1.25)  # per-video factor on the travel
# Scene: K sinusoids whose log-frequencies live on a circle of period _LOG_PERIOD, starting at 1 cycle per
# frame side (so they span 1 to e^P = 6 cycles per side), with a raised-cosine amplitude window on the circle.
_BG_WAVES = 16
_LOG_PERIOD = math.log(6.0)
_BG_CONTRAST = (0.15, 0.25)  # standard deviation of the scene's brightness
_OBJECT_RADIUS = (0.12, 0.22)  # object radius, fraction of min(H, W)


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
            raise ValueError(f"data.synthetic.classes must be in 2..{len(CLASS_NAMES)}, got {self.num_classes}")
        if self.frames < 2:
            raise ValueError(f"data.synthetic.frames must be at least 2, got {self.frames}")
        if self.height < 16 or self.width < 16:
            raise ValueError(f"data.synthetic.resolution must be at least [16, 16], got "
                             f"[{self.height}, {self.width}]")

    @property
    def classes(self) -> list[str]:
        return list(CLASS_NAMES[: self.num_classes])

    @property
    def side(self) -> int:
        return min(self.height, self.width)


def video_label(spec: SyntheticSpec, index: int) -> int:
    """Label of video ``index`` (balanced: index modulo the number of classes)."""
    return int(index) % spec.num_classes


@dataclass
class VideoContent:
    """Label-independent content of one video: scene, object, and the speed of the camera."""

    directions: np.ndarray  # (K,) float64: direction of every scene sinusoid (radians)
    log_freqs: np.ndarray  # (K,) float64: their log-frequency at zoom 0, on the circle [0, P)
    phases: np.ndarray  # (K,) float64: their phase at the frame centre
    amplitudes: np.ndarray  # (K, 3) float32: RGB amplitude of each sinusoid at the top of its window
    mean: np.ndarray  # (3,) float32: scene mean colour
    colors: np.ndarray  # (3, 3) float32: object stripe colour A, stripe colour B, spot colour
    shape: np.ndarray  # (7,) a1, a2, a3 harmonic amplitudes, p1, p2, p3 phases, stripe wavelength (radii)
    spot: np.ndarray  # (3,) spot centre u, v and radius, in units of the object radius
    stripe_phase: float  # phase of the object's stripes
    place: np.ndarray  # (4,) object centre x, y (pixels), orientation (radians), radius (pixels)
    speed: np.ndarray  # (4,) per-frame step of every pose variable when it is the class variable
    frames: int  # T


def _rng(spec: SyntheticSpec, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {sorted(SPLITS)}")
    if index < 0:
        raise ValueError(f"synthetic video index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence([int(spec.seed) & 0xFFFFFFFF, SPLITS[split], int(index)]))


def _window(log_freq: np.ndarray) -> np.ndarray:
    """Raised-cosine amplitude window on the log-frequency circle: 0 where it wraps, 1 in the middle."""
    return 0.5 - 0.5 * np.cos(2 * math.pi * np.mod(log_freq, _LOG_PERIOD) / _LOG_PERIOD)


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
    k, side = _BG_WAVES, spec.side
    directions = rng.uniform(0, 2 * math.pi, size=k)
    log_freqs = rng.uniform(0, _LOG_PERIOD, size=k)  # uniform on the circle: every zoom state looks alike
    phases = rng.uniform(0, 2 * math.pi, size=k)
    amp = rng.normal(size=(k, 1)) + 0.35 * rng.normal(size=(k, 3))  # (K, 3): grey plus some colour
    # brightness std: sum over waves of amp^2 * E[window^2] / 2, with E[window^2] = 3/8 on the circle
    amp *= rng.uniform(*_BG_CONTRAST) / math.sqrt(float((amp ** 2).sum(0).mean()) * 3 / 16)
    mean = rng.uniform(0.3, 0.7, size=3).astype(np.float32)
    colors = _colors(rng, mean)
    shape = np.concatenate([
        [rng.uniform(0.1, 0.2), rng.uniform(0.1, 0.15), rng.uniform(0.0, 0.05)],  # a1, a2, a3
        rng.uniform(0, 2 * math.pi, size=3),  # p1, p2, p3
        [rng.uniform(0.5, 1.0)],  # stripe wavelength (object radii)
    ])
    spot = np.array([rng.uniform(0.3, 0.5), rng.uniform(-0.25, 0.25), rng.uniform(0.18, 0.28)])
    stripe_phase = float(rng.uniform(0, 2 * math.pi))
    place = np.array([rng.uniform(0, spec.width), rng.uniform(0, spec.height), rng.uniform(0, 2 * math.pi),
                      rng.uniform(*_OBJECT_RADIUS) * side])
    travel = np.array(_TRAVEL) * np.array([side, side, 1.0, 1.0])
    speed = travel / spec.frames * rng.uniform(*_SPEED_JITTER)  # (4,) per frame
    return VideoContent(directions, log_freqs, phases, amp.astype(np.float32), mean, colors, shape, spot,
                        stripe_phase, place, speed, spec.frames)


def clip_states(content: VideoContent, label: int) -> np.ndarray:
    """(T, 4) pose per time step (x px, y px, angle rad, log-zoom) of the clip of ``label``.

    The class variable moves at constant speed in the class's direction, centred on 0 at mid-clip; the
    other variables stay at 0. The clip of the other class of a pair is this one reversed in time.
    """
    var, direction = class_motion(label)
    frames = content.frames
    states = np.zeros((frames, NUM_VARS))
    states[:, var] = direction * content.speed[var] * (np.arange(frames) - (frames - 1) / 2.0)
    return states


def render_background(spec: SyntheticSpec, content: VideoContent, states: np.ndarray) -> np.ndarray:
    """The scene under poses ``states`` (n, 4): float32 (n, H, W, 3).

    Wave k at zoom z has log-frequency u = (u0_k - z) mod P, i.e. frequency m = e^u / side cycles per pixel,
    amplitude A_k window(u), and direction d_k; pixel p shows
    sum_k A_k window(u) cos(2 pi m d_k . (R(-angle) (p - c) - offset) + phase_k), c the frame centre. So the
    offset shifts the scene on screen (at angle 0), the angle turns it about c, and the zoom scales it about c.
    """
    h, w = spec.height, spec.width
    log_f = content.log_freqs[None, :] - states[:, 3:4]  # (n, K): zooming in lowers every frequency
    m = 2 * math.pi * np.exp(np.mod(log_f, _LOG_PERIOD)) / spec.side  # (n, K) radians per pixel
    window = _window(log_f)  # (n, K)
    # screen wave vector: R(angle) applied to m d_k (d . R(-a) v = (R(a) d) . v)
    theta = content.directions[None, :] + states[:, 2:3]  # (n, K)
    gx, gy = m * np.cos(theta), m * np.sin(theta)  # (n, K) each
    ph = content.phases[None, :] - m * (np.cos(content.directions) * states[:, 0:1]
                                        + np.sin(content.directions) * states[:, 1:2])  # (n, K)
    xs = np.arange(w) + 0.5 - w / 2.0  # (W,) pixel centres relative to the frame centre
    ys = np.arange(h) + 0.5 - h / 2.0  # (H,)
    ax = gx[..., None] * xs + ph[..., None]  # (n, K, W)
    ay = gy[..., None] * ys  # (n, K, H)
    f32 = np.float32
    cos_x, sin_x = np.cos(ax).astype(f32)[:, None], np.sin(ax).astype(f32)[:, None]  # (n, 1, K, W)
    # per-frame, per-wave RGB amplitude: (K, 3) -> (1, 3, 1, K), times the window (n, K) -> (n, 1, 1, K)
    amp = content.amplitudes.T[None, :, None, :] * window.astype(f32)[:, None, None, :]  # (n, 3, 1, K)
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


def render_object(spec: SyntheticSpec, content: VideoContent) -> tuple[np.ndarray, np.ndarray]:
    """The still object: colour float32 (1, H, W, 3) and coverage (1, H, W, 1).

    It sits at ``content.place``; the image is a torus for it (it wraps around the borders).
    """
    h, w = spec.height, spec.width
    f32 = np.float32
    cx, cy, ang, radius = (f32(x) for x in content.place)
    ys = np.arange(h, dtype=f32).reshape(1, h, 1) + f32(0.5)  # (1, H, 1) pixel centres
    xs = np.arange(w, dtype=f32).reshape(1, 1, w) + f32(0.5)  # (1, 1, W)
    dx = np.mod(xs - cx + f32(w / 2), f32(w)) - f32(w / 2)  # (1, 1, W) shortest offset on the torus
    dy = np.mod(ys - cy + f32(h / 2), f32(h)) - f32(h / 2)  # (1, H, 1)
    c, s = f32(math.cos(ang)), f32(math.sin(ang))
    u = np.broadcast_to(c * dx + s * dy, (1, h, w))  # (1, H, W) object-frame coordinates (rotated by -angle)
    v = np.broadcast_to(c * dy - s * dx, (1, h, w))
    rho = np.sqrt(u * u + v * v)
    edge = radius * _harmonics(u, v, rho, content.shape)  # (1, H, W)
    alpha = np.clip(edge - rho + f32(0.5), 0.0, 1.0)[..., None]  # (1, H, W, 1) anti-aliased coverage
    frequency = f32(2 * math.pi / content.shape[6]) / radius
    stripe = f32(0.5) + f32(0.5) * np.cos(u * frequency + f32(content.stripe_phase))
    col_a, col_b, col_spot = content.colors
    obj = col_b + stripe[..., None] * (col_a - col_b)  # (1, H, W, 3)
    su, sv, sr = (f32(x) for x in content.spot)
    du, dv = u - su * radius, v - sv * radius
    spot_alpha = np.clip(sr * radius - np.sqrt(du * du + dv * dv) + f32(0.5), 0.0, 1.0)[..., None]
    obj += spot_alpha * (col_spot - obj)
    return obj, alpha


def render_frames(spec: SyntheticSpec, content: VideoContent, states: np.ndarray) -> np.ndarray:
    """Render poses ``states`` (n, 4): uint8 (n, H, W, 3)."""
    background = render_background(spec, content, states)
    obj, alpha = render_object(spec, content)
    frames = background + alpha * (obj - background)  # (n, H, W, 3), the object broadcast over frames
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

    can_hang = False  # pure in-memory rendering: the dataset skips its decode watchdog thread

    def __init__(self, spec: SyntheticSpec):
        self.spec = spec

    def decode(self, record: VideoRecord, indices: Sequence[int]) -> np.ndarray:
        m = _PATH.match(record.path)
        if m is None:
            raise ValueError(f"not a synthetic video path: {record.path!r} (expected synthetic://<split>/<index>)")
        return render_clip(self.spec, m.group(1), int(m.group(2)), indices=indices)
