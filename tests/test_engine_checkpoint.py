"""Checkpoints: atomic writes, weights_only loading, the choice of --resume auto (never a truncated or
temporary file) and the RNG state round trip."""
import os
import random

import numpy as np
import pytest
import torch

from rsanet.engine import checkpoint as ck


def state(epoch):
    return {"model": {"w": torch.full((3,), float(epoch))}, "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {"last_epoch": epoch}, "epoch": epoch, "step_in_epoch": 0, "global_step": 10 * epoch,
            "config": {"train": {"epochs": 5}}, "rng": [ck.capture_rng_state()]}


def truncate_copy(src, dst, keep=0.5):
    """Write the first part of ``src`` as a new file ``dst`` (what a non-atomic writer leaves when killed)."""
    data = src.read_bytes()
    tmp = dst.with_name("partial")
    tmp.write_bytes(data[: int(len(data) * keep)])
    os.replace(tmp, dst)


def test_save_is_atomic_and_loads_weights_only(tmp_path):
    p = ck.save_checkpoint(state(1), tmp_path / "last.pth")
    assert p.is_file() and not list(tmp_path.glob("*.tmp"))
    loaded = torch.load(p, weights_only=True)  # plain containers only
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], torch.ones(3))


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ck.save_checkpoint(state(1), tmp_path / "last.pth")

    def dying_save(obj, f):  # the process is killed half-way through the write
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(state(2), tmp_path / "last.pth")
    monkeypatch.undo()
    path, loaded = ck.find_resume_checkpoint(tmp_path)
    assert path.name == "last.pth" and loaded["epoch"] == 1  # the .tmp leftover is ignored


def test_resume_auto_skips_truncated_last(tmp_path):
    last = ck.save_checkpoint(state(3), tmp_path / "last.pth")
    ck.link_checkpoint(last, tmp_path / "epoch_003.pth")
    ck.save_checkpoint(state(2), tmp_path / "epoch_002.pth")
    ck.save_checkpoint(state(4), tmp_path / "last.pth")  # a new inode; epoch_003 keeps epoch 3
    truncate_copy(tmp_path / "last.pth", tmp_path / "last.pth")
    with pytest.raises(ck.CheckpointError, match="last.pth"):
        ck.load_checkpoint(tmp_path / "last.pth")
    warnings = []
    path, loaded = ck.find_resume_checkpoint(tmp_path, warn=warnings.append)
    assert path.name == "epoch_003.pth" and loaded["epoch"] == 3
    assert len(warnings) == 1 and "last.pth" in warnings[0]


def test_resume_auto_empty_and_all_broken(tmp_path):
    assert ck.find_resume_checkpoint(tmp_path) is None
    (tmp_path / "last.pth.tmp").write_bytes(b"junk")  # never a candidate
    assert ck.find_resume_checkpoint(tmp_path) is None
    (tmp_path / "last.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ck.CheckpointError, match="no usable checkpoint"):
        ck.find_resume_checkpoint(tmp_path)


def test_not_a_training_checkpoint_is_named(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "bare.pth")
    with pytest.raises(ck.CheckpointError, match="bare.pth.*missing"):
        ck.load_checkpoint(tmp_path / "bare.pth")
    sd, cfg = ck.model_state_from_checkpoint(tmp_path / "bare.pth")
    assert cfg is None and list(sd) == ["w"]


def test_prune_keeps_newest_epochs(tmp_path):
    for e in range(1, 6):
        ck.save_checkpoint(state(e), tmp_path / f"epoch_{e:03d}.pth")
    ck.prune_epoch_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_004.pth", "epoch_005.pth"]


def draw():
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_rng_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    ck.save_checkpoint({"rng": ck.capture_rng_state()}, tmp_path / "r.pth")
    expected = draw()
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ck.restore_rng_state(torch.load(tmp_path / "r.pth", weights_only=True)["rng"])
    assert draw() == expected
