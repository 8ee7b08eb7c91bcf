"""Faults and habits that must never train the wrong thing: a resume with a new LR or more epochs, unlabelled
training entries, a validation split that is missing or absent on purpose, a checkpoint of another model, a
truncated last.pth, the class count of a list dataset, and more loader workers than CPUs. Everything runs the
real engine on CPU with a tiny TSN-ResNet-18 on generated data (synthetic clips or real JPEG frame folders)."""
import json
import math
import os
from pathlib import Path

import pytest
import torch

from rsanet.config import load_config
from rsanet.engine import CheckpointError, run_training, runner
from rsanet.engine.run_state import RunState
from rsanet.testing.media import index_frames, write_frame_folder

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "model.arch=resnet18", "model.width=8", "model.num_segments=4", "model.pretrained=null",
    "model.transform.positions=[[1],[],[],[]]", "model.transform.rsa.kernel_size=[3,3,3]",
    "model.transform.rsa.queries=2",
    "data.resize=[32,32]", "data.crop_size=32", "data.num_workers=0", "train.batch_size=4", "test.batch_size=4",
    "runtime.deterministic=true", "runtime.log_interval=1", "runtime.tensorboard=false", "runtime.progress=false",
    "runtime.checkpoint_interval=0",
]
# train.lr_schedule=step, min_lr_ratio=0: the per-step cosine to 0 that cosine_lr writes out
SYNTHETIC = ["model.num_classes=2", "data.dataset=synthetic", "data.synthetic.classes=2", "data.synthetic.frames=4",
             "data.synthetic.resolution=[32,32]", "data.synthetic.train_size=8", "data.synthetic.val_size=5",
             "train.warmup_epochs=1", "train.lr_schedule=step", "train.min_lr_ratio=0"]


@pytest.fixture(autouse=True)
def _deterministic_flag():
    """Runs that set runtime.deterministic do not leak it into other tests (one thread: conftest.py)."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def synthetic_cfg(*opts):
    return load_config(None, TINY + SYNTHETIC + list(opts))


def records(work_dir, kind="train", start=0):
    rows = [json.loads(x) for x in (Path(work_dir) / "metrics.jsonl").read_text().splitlines()[start:]]
    return [r for r in rows if r["kind"] == kind]


def no_process_group(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the process group must not be created")
    monkeypatch.setattr(runner, "init_distributed", fail)


def cosine_lr(peak, step, warmup, total):
    """The recipe's LR at 0-based optimizer step ``step``, written out independently of WarmupCosine."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min((step - warmup) / (total - warmup), 1.0)))


# ------------------------------------------------------------------------------------- 1. resume changes
def test_more_epochs_on_resume_extend_the_schedule(tmp_path):
    # A finished 2-epoch run (2 steps per epoch) resumed with train.epochs=3 trains epoch 3 on the 3-epoch
    # schedule, not at LR 0.
    w = tmp_path / "w"
    run_training(synthetic_cfg("train.epochs=2"), w)
    start = len((w / "metrics.jsonl").read_text().splitlines())
    cfg = synthetic_cfg("train.epochs=3")
    out = run_training(cfg, w, resume="auto")
    after = records(w, start=start)
    assert out["finished"] and [r["step"] for r in after] == [5, 6]
    peak = RunState.of(cfg, world_size=1).scaled_lr
    assert json.loads((w / "run_state.json").read_text())["scaled_lr"] == peak  # what the run used
    for r in after:  # warm-up 2 steps, 6 steps in total
        assert r["lr"] == pytest.approx(cosine_lr(peak, r["step"] - 1, 2, 6), rel=1e-12) and r["lr"] > 0
    log = (w / "train.log").read_text()
    assert "LR schedule of this config from the resume point (train.epochs: 2 -> 3): step 5 of 6" in log


def authors_epoch_lr(peak, epoch, warmup, epochs, floor=1e-3):
    """The authors' per-epoch LR (their WarmupCosineLR stepped before each epoch), written out independently."""
    k = epoch + 1
    if k < warmup:
        return peak * (1e-3 * (1 - k / warmup) + k / warmup)
    return peak * floor + peak * (1 - floor) * (1 + math.cos(math.pi * min((k - warmup) / (epochs - warmup), 1))) / 2


def test_more_epochs_on_resume_extend_the_per_epoch_schedule(tmp_path):
    # The same with the authors' per-epoch schedule (train.lr_schedule=epoch): epochs 3 and 4 of a 2-epoch run
    # resumed with train.epochs=4 train at the 4-epoch schedule's values, not at the 2-epoch floor.
    w = tmp_path / "w"
    opts = ["train.lr_schedule=epoch", "train.min_lr_ratio=0.001", "train.warmup_epochs=2"]
    run_training(synthetic_cfg("train.epochs=2", *opts), w)
    start = len((w / "metrics.jsonl").read_text().splitlines())
    cfg = synthetic_cfg("train.epochs=4", *opts)
    out = run_training(cfg, w, resume="auto")
    after = records(w, start=start)
    assert out["finished"] and [r["step"] for r in after] == [5, 6, 7, 8]
    for r in after:  # 2 steps per epoch
        peak = RunState.of(cfg, 1).scaled_lr
        assert r["lr"] == pytest.approx(authors_epoch_lr(peak, (r["step"] - 1) // 2, 2, 4), rel=1e-12)
    assert "(train.epochs: 2 -> 4): step 5 of 8" in (w / "train.log").read_text()


def test_new_lr_and_weight_decay_apply_from_the_resume_point(tmp_path):
    w = tmp_path / "w"
    run_training(synthetic_cfg("train.epochs=3"), w, stop_after=3)  # last.pth: end of epoch 1 (step 2)
    start = len((w / "metrics.jsonl").read_text().splitlines())
    cfg = synthetic_cfg("train.epochs=3", "train.lr=0.004", "train.weight_decay=0.001")
    run_training(cfg, w, resume="auto")
    after = records(w, start=start)
    assert [r["step"] for r in after] == [3, 4, 5, 6]
    for r in after:
        assert r["lr"] == pytest.approx(cosine_lr(0.004 * 4 / 64, r["step"] - 1, 2, 6), rel=1e-12)
    groups = torch.load(w / "last.pth", weights_only=True)["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.001, 0.0] and groups[0]["initial_lr"] == 0.004 * 4 / 64
    assert "train.lr: 0.02 -> 0.004" in (w / "train.log").read_text()


def test_fewer_epochs_than_done_is_refused_before_any_work(tmp_path, monkeypatch):
    w = tmp_path / "w"
    run_training(synthetic_cfg("train.epochs=2"), w)
    no_process_group(monkeypatch)
    with pytest.raises(CheckpointError, match=r"has completed 2 epochs, more than train.epochs=1: .* set "
                                              r"train.epochs=2 or more"):
        run_training(synthetic_cfg("train.epochs=1"), w, resume="auto")


# ------------------------------------------------------------------------------ 6. another model, 7. truncated
def test_resume_path_with_another_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    run_training(synthetic_cfg("train.epochs=1"), tmp_path / "a")
    no_process_group(monkeypatch)
    with pytest.raises(CheckpointError, match=r"holds another model than this config \(model.width: 8 -> 16\)"):
        run_training(synthetic_cfg("train.epochs=1", "model.width=16"), tmp_path / "b",
                     resume=str(tmp_path / "a" / "last.pth"))
    assert not (tmp_path / "b").exists()
    from test_tools_support import load_tool

    from rsanet.config import dump_config
    dump_config(synthetic_cfg("train.epochs=1", "model.width=16"), tmp_path / "wide.yaml")
    code = load_tool("train").main(["--config", str(tmp_path / "wide.yaml"), "--work-dir", str(tmp_path / "b"),
                                    "--resume", str(tmp_path / "a" / "last.pth")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"error: {tmp_path / 'a' / 'last.pth'} holds another model")


def test_truncated_last_is_skipped_with_a_warning(tmp_path):
    w = tmp_path / "w"
    run_training(synthetic_cfg("train.epochs=2", "runtime.keep_epoch_checkpoints=2"), w)
    data = (w / "last.pth").read_bytes()
    (w / "last.pth").unlink()  # epoch_002.pth is a hard link to it: keep that one intact
    (w / "last.pth").write_bytes(data[: len(data) // 2])
    (w / "epoch_002.pth").unlink()
    out = run_training(synthetic_cfg("train.epochs=2", "runtime.keep_epoch_checkpoints=2"), w, resume="auto")
    assert out["finished"] and out["epoch"] == 2
    log = (w / "train.log").read_text()
    assert f"--resume auto: skipping unusable checkpoint: cannot read checkpoint {w / 'last.pth'}" in log
    assert f"--resume: continuing from {w / 'epoch_001.pth'}" in log


# ------------------------------------------------------------------------------ list datasets on disk
def frame_dataset(tmp_path, labels, name="train", root_name="frames"):
    """Frame folders <name>_<i> (6 frames of 32 x 32) under tmp_path/root_name, listed as TSN lines."""
    root = tmp_path / root_name
    lines = []
    for i, label in enumerate(labels):
        write_frame_folder(root / f"{name}_{i}", index_frames(6, 32, 32))
        lines.append(f"{name}_{i} 6 {label}\n")
    lst = tmp_path / f"{name}.txt"
    lst.write_text("".join(lines))
    return root, lst


def list_cfg(root, train, *opts, val=None):
    return load_config(None, TINY + ["data.dataset=list", f"data.root={root}", f"data.train_annotations={train}",
                                     f"data.val_annotations={val or 'null'}", "train.epochs=1",
                                     "train.warmup_epochs=0", *opts])


def test_unlabelled_training_entry_is_refused_by_training_and_check_dataset(tmp_path, monkeypatch, capsys):
    from test_tools_support import load_tool
    root, train = frame_dataset(tmp_path, [0, 1, -1, 1])
    cfg = list_cfg(root, train, "model.num_classes=2")
    expected = f"{train}: 1 of 4 training entries have no label (-1), e.g. ['train_2']"
    no_process_group(monkeypatch)
    with pytest.raises(ValueError) as e:
        run_training(cfg, tmp_path / "w")
    assert expected in str(e.value)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"data: {{dataset: list, root: {root}, train_annotations: {train}}}\n"
                        "model: {num_classes: 2}\n")
    code = load_tool("check_dataset").main(["--config", str(cfg_file), "--split", "train"])
    err = capsys.readouterr().err
    assert code == 2 and expected in err


def test_val_split_with_every_entry_missing_fails_before_training(tmp_path, monkeypatch):
    root, train = frame_dataset(tmp_path, [0, 1, 0, 1])
    val = tmp_path / "val.txt"
    val.write_text("gone_0 6 0\ngone_1 6 1\n")
    no_process_group(monkeypatch)
    with pytest.raises(ValueError, match=r"2 of 2 `val` entries are missing under .*gone_0.*more than "
                                         r"data.max_bad_fraction=0.01"):
        run_training(list_cfg(root, train, "model.num_classes=2", val=val), tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_epoch_is_saved_when_its_validation_is_unreadable(tmp_path):
    root, train = frame_dataset(tmp_path, [0, 1, 0, 1])
    (root / "empty_0").mkdir()  # present but without frames: passes the start-up check, fails to decode
    val = tmp_path / "val.txt"
    val.write_text("empty_0 6 0\n")
    from rsanet.data import BadDataError
    with pytest.raises(BadDataError, match="1 of 1 val samples"):
        run_training(list_cfg(root, train, "model.num_classes=2", val=val), tmp_path / "w")
    ckpt = torch.load(tmp_path / "w" / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 1


# --------------------------------------------------------------------------- 10. class count, 11. no val
def test_num_classes_follows_the_label_file(tmp_path):
    root, train = frame_dataset(tmp_path, [0, 2, 1, 2])
    classes = tmp_path / "classes.txt"
    classes.write_text("open\nclose\nwave\n")
    out = run_training(list_cfg(root, train, f"data.label_file={classes}"), tmp_path / "w")
    ckpt = torch.load(tmp_path / "w" / "last.pth", weights_only=True)
    assert out["finished"] and ckpt["model"]["fc.weight"].shape[0] == 3 and ckpt["config"]["model"]["num_classes"] == 3
    assert ckpt["config"]["data"]["backend"] == "frames"  # auto: the entries are frame folders
    log = (tmp_path / "w" / "train.log").read_text()
    assert f"model.num_classes=3, the classes of data.label_file {classes}" in log


def test_num_classes_mismatch_says_what_to_set(tmp_path, monkeypatch):
    root, train = frame_dataset(tmp_path, [0, 1])
    classes = tmp_path / "classes.txt"
    classes.write_text("open\nclose\nwave\n")
    no_process_group(monkeypatch)
    with pytest.raises(ValueError, match=r"model.num_classes=5, but data.label_file .* lists 3 classes: set "
                                         r"model.num_classes=3 \(or 0 to follow the label file\)"):
        run_training(list_cfg(root, train, f"data.label_file={classes}", "model.num_classes=5"), tmp_path / "w")


def test_official_dataset_class_mismatch_says_what_to_set(tmp_path):
    from rsanet.data import build_dataset
    write_frame_folder(tmp_path / "frames" / "1", index_frames(4, 16, 16))
    (tmp_path / "train.csv").write_text("1;Holding something\n")
    cfg = load_config(None, ["data.dataset=ssv1", f"data.root={tmp_path / 'frames'}", "model.num_classes=10",
                             f"data.train_annotations={tmp_path / 'train.csv'}",
                             f"data.label_file={ROOT / 'data' / 'ssv1' / 'classes_csv_order.txt'}"])
    with pytest.raises(ValueError, match=r"defines 174 classes: set model.num_classes=174 \(or 0 to follow the data\)"):
        build_dataset(cfg, "train")


def test_without_label_file_labels_beyond_the_head_fail_and_a_big_head_warns(tmp_path, monkeypatch):
    root, train = frame_dataset(tmp_path, [0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"has label 2, beyond the classifier's 2 outputs \(model.num_classes=2\): "
                                         r"set model.num_classes=3"):
        run_training(list_cfg(root, train, "model.num_classes=2"), tmp_path / "w1")
    run_training(list_cfg(root, train, "model.num_classes=174"), tmp_path / "w2")
    log = (tmp_path / "w2" / "train.log").read_text()
    assert "model.num_classes=174, but the labels of" in log and "171 of the classifier's outputs are never" in log
    out = run_training(list_cfg(root, train), tmp_path / "w3")  # unset: the largest label + 1
    assert torch.load(tmp_path / "w3" / "last.pth", weights_only=True)["model"]["fc.weight"].shape[0] == 3
    assert out["finished"]


def test_training_without_a_validation_split(tmp_path):
    root, train = frame_dataset(tmp_path, [0, 1, 0, 1])
    out = run_training(list_cfg(root, train, "model.num_classes=2", "train.epochs=2"), tmp_path / "w")
    w = tmp_path / "w"
    assert out["finished"] and out["best_epoch"] == -1 and not records(w, "val")
    assert (w / "best.pth").read_bytes() == (w / "last.pth").read_bytes()
    assert torch.load(w / "best.pth", weights_only=True)["epoch"] == 2
    assert "no validation: data.val_annotations is null; best.pth is the last epoch" in (w / "train.log").read_text()


# ----------------------------------------------------------------------------------- 14. loader workers
def test_num_workers_is_clamped_to_the_cpus_of_this_process(tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # one CPU, for us and for torch's own check
    out = run_training(synthetic_cfg("train.epochs=1", "data.num_workers=3", "data.synthetic.train_size=4"),
                       tmp_path / "w")
    assert out["finished"]
    assert "data.num_workers 3 -> 1: this process may use 1 CPUs" in (tmp_path / "w" / "train.log").read_text()
    assert not [w for w in recwarn if "worker processes in total" in str(w.message)]
    assert torch.load(tmp_path / "w" / "last.pth", weights_only=True)["config"]["data"]["num_workers"] == 1
