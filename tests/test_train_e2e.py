"""End-to-end training and testing on CPU with the real builders: a tiny TSN-ResNet-18 with RSA layers on the
built-in synthetic motion dataset. Covers learning, outputs, exact kill-and-resume, the NaN guard and the
checks that must fail before any work starts."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rsanet.config import load_config
from rsanet.engine import NonFiniteLossError, run_test, run_training, runner
from rsanet.metrics import load_scores

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "model.arch=resnet18", "model.width=8", "model.num_classes=2", "model.num_segments=4",
    "model.transform.positions=[[1],[1],[],[]]", "model.transform.rsa.kernel_size=[3,3,3]", "model.pretrained=null",
    "data.dataset=synthetic", "data.synthetic.classes=2", "data.synthetic.frames=4",
    "data.synthetic.resolution=[32,32]", "data.resize=[32,32]", "data.crop_size=32", "data.num_workers=0",
    "data.synthetic.train_size=8", "data.synthetic.val_size=5", "train.batch_size=4", "train.warmup_epochs=1",
    "test.batch_size=4",
    "runtime.deterministic=true", "runtime.log_interval=1", "runtime.tensorboard=false", "runtime.progress=false",
    "runtime.checkpoint_interval=0",
]


def tiny_cfg(*opts):
    return load_config(None, TINY + list(opts))


@pytest.fixture(autouse=True)
def _restore_determinism_and_threads():
    # One intra-op thread: tiny tensors gain nothing from more, and on a shared 2-core machine spinning OpenMP
    # threads make every op up to 100x slower.
    before, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(before)
    torch.set_num_threads(threads)


def train_records(work_dir, start=0):
    lines = (Path(work_dir) / "metrics.jsonl").read_text().splitlines()[start:]
    return [json.loads(x) for x in lines if json.loads(x)["kind"] == "train"]


def test_training_learns_and_writes_its_outputs(tmp_path):
    # Full-batch training on 8 clips without augmentation: the loss must fall (memorisation).
    cfg = tiny_cfg("data.scales=[1.0]", "data.flip=none", "model.dropout=0.0", "model.stochastic_depth=0.0",
                   "train.batch_size=8", "train.lr=3.2", "train.label_smoothing=0.0", "train.epochs=8",
                   "train.eval_every=4", "runtime.tensorboard=true",
                   "model.classifier_init=normal")  # near-zero logits: the first loss is at chance
    summary = run_training(cfg, tmp_path / "w")
    losses = [r["loss"] for r in train_records(tmp_path / "w")]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(math.log(2), abs=0.15)  # chance level of 2 classes
    assert max(losses[-2:]) < 0.25 * losses[0]
    w = tmp_path / "w"
    for name in ("config.yaml", "train.log", "metrics.jsonl", "last.pth", "best.pth", "epoch_008.pth"):
        assert (w / name).is_file(), name
    assert sorted(p.name for p in w.glob("epoch_*.pth")) == ["epoch_007.pth", "epoch_008.pth"]  # 2 kept
    assert list((w / "tensorboard").glob("events.out.tfevents.*"))
    assert load_config(w / "config.yaml").train.epochs == 8  # the resolved config, loadable
    vals = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert [v["epoch"] for v in vals] == [4, 8]
    log = (w / "train.log").read_text()
    assert "best top1" in log and "last top1" in log
    assert summary["finished"] and summary["last_top1"] == vals[-1]["top1"]
    ckpt = torch.load(w / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 8 and ckpt["global_step"] == 8 and ckpt["config"]["train"]["epochs"] == 8
    for key in ("model", "optimizer", "scheduler", "rng", "best_top1", "step_in_epoch"):
        assert key in ckpt

    # Multi-view test of the checkpoint; outputs next to it by default.
    tcfg = tiny_cfg("test.clips=2", "test.split=test")
    metrics = run_test(tcfg, w / "best.pth")
    saved = json.loads((w / "test_metrics.json").read_text())
    for key in ("top1", "top5", "mean_class_accuracy", "num_videos", "views"):
        assert saved[key] == metrics[key]
    assert saved["views"] == 2 and saved["num_videos"] == 5
    scores = load_scores(w / "scores.npz")
    assert scores["scores"].shape == (5, 2) and scores["views"].tolist() == [2] * 5
    np.testing.assert_allclose(scores["scores"].sum(1), 1.0, atol=1e-5)  # mean of softmax vectors
    hand_top1 = 100.0 * np.mean(scores["scores"].argmax(1) == scores["labels"])
    assert saved["top1"] == pytest.approx(hand_top1) and saved["top5"] == 100.0
    assert scores["video_ids"].tolist() == [f"test/{i}" for i in range(5)]  # the records' video ids


RESUME = ["data.synthetic.train_size=12", "model.dropout=0.3", "model.stochastic_depth=0.2", "data.flip=all",
          "train.epochs=3", "train.lr=0.8"]  # 3 steps per epoch; dropout, drop-path and augmentation use the RNGs


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    w = tmp_path_factory.mktemp("full")
    before, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(1)
    run_training(tiny_cfg(*RESUME), w)
    torch.use_deterministic_algorithms(before)
    torch.set_num_threads(threads)
    return w


@pytest.mark.parametrize("interval,stop_after,resumed_from", [
    (0, 5, 3),  # killed in epoch 2 after step 5; the last checkpoint is the end of epoch 1 (step 3)
    (2, 5, 4),  # mid-epoch checkpoints every 2 steps: resumes inside epoch 2, after step 4
])
def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path, uninterrupted, interval, stop_after,
                                                          resumed_from):
    full = {r["step"]: r["loss"] for r in train_records(uninterrupted)}
    assert sorted(full) == list(range(1, 10))
    cfg = tiny_cfg(*RESUME, f"runtime.checkpoint_interval={interval}")
    w = tmp_path / "w"
    out = run_training(cfg, w, stop_after=stop_after)
    assert not out["finished"] and out["global_step"] == stop_after
    ckpt = torch.load(w / "last.pth", weights_only=True)
    assert ckpt["global_step"] == resumed_from
    start = len((w / "metrics.jsonl").read_text().splitlines())
    run_training(cfg, w, resume="auto")
    after = train_records(w, start)
    assert [r["step"] for r in after] == list(range(resumed_from + 1, 10))
    for r in after:  # bit-exact loss curve after the resume
        assert r["loss"] == full[r["step"]], r["step"]
    a = torch.load(w / "last.pth", weights_only=True)["model"]
    b = torch.load(uninterrupted / "last.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_iteration_and_last_checkpoint(tmp_path, monkeypatch):
    real = runner.build_criterion

    def nan_on_third_call(cfg):
        base = real(cfg)
        calls = []

        def loss(logits, target):
            calls.append(1)
            out = base(logits, target)
            return out * float("nan") if len(calls) == 3 else out
        return loss

    monkeypatch.setattr(runner, "build_criterion", lambda cfg: _Module(nan_on_third_call(cfg)))
    w = tmp_path / "w"
    with pytest.raises(NonFiniteLossError) as e:
        run_training(tiny_cfg("train.epochs=2"), w)
    msg = str(e.value)
    assert "iteration 3 (epoch 2, step 1/2)" in msg and f"Last good checkpoint: {w / 'last.pth'}" in msg
    ckpt = torch.load(w / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert "NonFiniteLossError" in (w / "train.log").read_text()


class _Module(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, logits, target):
        return self.fn(logits, target)


def test_missing_dataset_fails_before_the_process_group(tmp_path, monkeypatch):
    def no_group(*a, **k):
        raise AssertionError("the process group must not be created")

    monkeypatch.setattr(runner, "init_distributed", no_group)
    cfg = tiny_cfg("data.dataset=ssv1", f"data.root={tmp_path / 'nowhere'}", "model.num_classes=174")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_training(cfg, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_train_tool_missing_dataset_message(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  root: /definitely/not/here\n  train_annotations: /nope.csv\n")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(cfg),
                        "--work-dir", str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "/definitely/not/here" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "w").exists()


def test_existing_run_needs_resume(tmp_path):
    w = tmp_path / "w"
    w.mkdir()
    (w / "last.pth").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--resume auto"):
        run_training(tiny_cfg("train.epochs=1"), w)


def test_resume_with_another_batch_continues_the_schedule(tmp_path):
    # Epoch 1 with 4 clips per step (2 steps), then resumed with 2 clips per step (4 steps per epoch), as after
    # a change of the number of GPUs: training continues at epoch 2 with the LR of epoch 2 of the new schedule.
    w = tmp_path / "w"
    step = ("train.lr_schedule=step", "train.min_lr_ratio=0")  # the per-step schedule, whose values are below
    run_training(tiny_cfg("train.epochs=2", "train.eval_every=2", *step), w, stop_after=3)
    assert torch.load(w / "last.pth", weights_only=True)["epoch"] == 1
    start = len((w / "metrics.jsonl").read_text().splitlines())
    cfg = tiny_cfg("train.epochs=2", "train.eval_every=2", "train.batch_size=2", *step)
    run_training(cfg, w, resume="auto")
    after = train_records(w, start)
    assert [r["epoch"] for r in after] == [2] * 4
    # New schedule: 8 steps, 4 of warm-up; the first resumed step is step 4, the top of the cosine.
    peak = 0.02 * 2 / 64  # lr x total batch / 64
    assert json.loads((w / "run_state.json").read_text())["scaled_lr"] == pytest.approx(peak)  # this run's
    assert after[0]["lr"] == pytest.approx(peak)
    assert after[1]["lr"] == pytest.approx(peak * (1 + math.cos(math.pi / 4)) / 2)
    log = (w / "train.log").read_text()
    assert "steps per epoch then" in log and "resume point (train.batch_size: 4 -> 2; total batch: 4 -> 2)" in log


def test_channels_last_and_bf16_on_the_real_model(tmp_path):
    from rsanet.dist import DistContext
    cfg = tiny_cfg("train.channels_last=true", "train.amp=bf16", "train.epochs=1")
    net = runner.prepare_model(cfg, DistContext(0, 0, 1, torch.device("cpu"), ""), train=True)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    out = run_training(cfg, tmp_path / "w")
    assert out["finished"] and 0.0 <= out["last_top1"] <= 100.0
    assert all(math.isfinite(r["loss"]) for r in train_records(tmp_path / "w"))
