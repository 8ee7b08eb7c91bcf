"""Writers of small real media files (JPEG frame folders, WebM/MP4 videos) for tests and benchmarks.

Frames can carry their own index as a gray level (:func:`index_frames`), so that a reader can check which
frames it decoded: frame ``k`` has level ``8 + 12 k`` (exact for 21 frames, then it wraps). Videos are
written with PyAV (``pip install av``), which is only imported when a video is written.

decord loads its bundled FFmpeg/libvpx with ``RTLD_GLOBAL``; once it is imported, PyAV's VP8/VP9 encoders fail
to open in the same process (``avcodec_open2 ... returned 22``). :func:`write_video` then encodes WebM in a
child Python process that runs this file alone (it imports nothing from the package).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["gray_level", "frame_index_of", "index_frames", "textured_frames", "write_frame_folder", "write_video"]

_BASE, _STEP, _LEVELS = 8, 12, 21


def gray_level(k: int) -> int:
    """Gray level that encodes frame index ``k``."""
    return _BASE + _STEP * (k % _LEVELS)


def frame_index_of(mean_level: float) -> int:
    """Frame index (mod 21) encoded by a frame whose mean gray level is ``mean_level``."""
    return int(round((mean_level - _BASE) / _STEP))


def index_frames(count: int, height: int, width: int) -> np.ndarray:
    """(count, H, W, 3) uint8 frames, frame k uniformly gray at :func:`gray_level` (k)."""
    levels = np.array([gray_level(k) for k in range(count)], dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def textured_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(count, H, W, 3) uint8 frames of moving smooth colour gradients plus mild noise (compresses like video)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((count, height, width, 3), np.uint8)
    for k in range(count):
        phase = 0.15 * k
        r = 127 + 100 * np.sin(x / 17.0 + phase)
        g = 127 + 100 * np.cos(y / 13.0 - phase)
        b = 127 + 60 * np.sin((x + y) / 29.0 + 2 * phase)
        img = np.stack([r, g, b], -1) + rng.normal(0, 6, (height, width, 3))
        frames[k] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def write_frame_folder(folder: str | Path, frames: np.ndarray, template: str = "{:05d}.jpg", start: int = 1,
                       quality: int = 95) -> Path:
    """Write (T, H, W, 3) uint8 frames as ``folder/template.format(start + k)`` (JPEG or PNG by extension)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        Image.fromarray(np.ascontiguousarray(frame)).save(folder / template.format(start + k), quality=quality)
    return folder


def _encode(path: str, frames: np.ndarray, codec: str, fps: int) -> None:
    import av

    height, width = frames.shape[1:3]
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(path: str | Path, frames: np.ndarray, codec: str = "libx264", fps: int = 12) -> Path:
    """Encode (T, H, W, 3) uint8 frames into ``path`` (e.g. libvpx / libvpx-vp9 for .webm, libx264 / mpeg4
    for .mp4), yuv420p. Even frame sizes are safest for every codec."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "vpx" not in codec or "decord" not in sys.modules:
        _encode(str(path), frames, codec, fps)
        return path
    with tempfile.TemporaryDirectory() as tmp:  # see the module doc: VP8/VP9 next to decord
        npy = Path(tmp) / "frames.npy"
        np.save(npy, frames)
        proc = subprocess.run([sys.executable, __file__, str(path), str(npy), codec, str(fps)],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"encoding {path} with {codec} failed: {proc.stderr.strip()[-500:]}")
    return path


if __name__ == "__main__":  # child process of write_video: <out> <frames.npy> <codec> <fps>
    _encode(sys.argv[1], np.load(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
