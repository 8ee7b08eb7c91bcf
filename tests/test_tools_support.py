"""Helpers of the research-tool tests (tests/test_tools_*.py); this module holds no tests itself.

``train_tiny`` trains a tiny TSN-ResNet-18 (width 8, 4 frames, 32 px, one transform in layer1.1 with a
3x3x3 window and L = 2 queries) for one short epoch on the synthetic motion benchmark with the real engine
(``run_training``), and returns its YAML config and ``best.pth``. ``write_motion_video`` and
``write_motion_frames`` write a synthetic clip with a moving object as an MP4 (PyAV) or a JPEG frame folder.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
FRAMES, SIZE, SEGMENTS, CLASSES = 8, 32, 4, 4


def run_job(cmd: list[str], timeout: float, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` in a session of its own: on a timeout the whole
    process group (torchrun and every rank it started) is killed before TimeoutExpired is raised, so no rank
    outlives the test."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def tiny_config(kind: str = "rsa") -> dict:
    """The whole experiment as a dict (no dependence on configs/): ``kind`` is rsa or self_attention."""
    options = {"kernel_size": [3, 3, 3], "queries": 2}
    if kind == "rsa":
        options["init"] = "variance_preserving"  # the synthetic configs' init (and below: schedule, sampling)
    transform = {"type": kind, "positions": [[1], [], [], []], kind: options}
    return {
        "model": {"arch": "resnet18", "num_classes": CLASSES, "num_segments": SEGMENTS, "width": 8, "dropout": 0.0,
                  "stochastic_depth": 0.0, "pretrained": None, "classifier_init": "normal", "transform": transform},
        "data": {"dataset": "synthetic", "resize": [SIZE, SIZE],
                 "synthetic": {"train_size": 8, "val_size": 4, "frames": SEGMENTS, "resolution": [SIZE, SIZE],
                               "classes": CLASSES},
                 "crop_size": SIZE, "scales": [1.0], "flip": "none", "num_workers": 0, "pin_memory": False,
                 "segment_rule": "uniform"},  # as configs/synthetic: n = T, where tsm tests on frame 0 only
        "train": {"epochs": 1, "warmup_epochs": 0.0, "lr": 0.4, "batch_size": 8, "eval_every": 1, "lr_schedule": "step",
                  "min_lr_ratio": 0.0},
        "test": {"split": "val", "batch_size": 8},
        "runtime": {"device": "cpu", "progress": False, "tensorboard": False, "checkpoint_interval": 0},
    }


def train_tiny(folder: Path, kind: str = "rsa") -> tuple[Path, Path]:
    """Train the tiny model of ``kind`` under ``folder``; returns (config YAML, best.pth)."""
    from rsanet.config import load_config
    from rsanet.engine import run_training

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"tiny_{kind}.yaml"
    config.write_text(yaml.safe_dump(tiny_config(kind)))
    run_training(load_config(config), folder / "work")
    return config, folder / "work" / "best.pth"


def motion_frames() -> np.ndarray:
    """(8, 32, 32, 3) uint8: a synthetic video (test split, index 1) whose object moves."""
    from rsanet.data.synthetic import SyntheticSpec, render_clip

    return render_clip(SyntheticSpec(frames=FRAMES, height=SIZE, width=SIZE, num_classes=CLASSES), "test", 1)


def write_motion_video(path: Path) -> Path:
    from rsanet.testing.media import write_video

    return write_video(path, motion_frames())


def write_motion_frames(folder: Path) -> Path:
    from rsanet.testing.media import write_frame_folder

    return write_frame_folder(folder, motion_frames())


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module, so that a test can call its ``main(argv)``."""
    spec = importlib.util.spec_from_file_location(f"rsanet_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
