"""The training step with tiny in-test modules and datasets that follow the sample-dict contract: gradient
accumulation equals one big batch, gradient clipping bounds the update, the fp16 loss scaler skips
overflowing steps through its calibration and stops the run only when the scale collapses, items without a
usable clip stay out of the loss, and the loaders (uint8 clips, non-persistent evaluation workers)."""
import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from rsanet.config import load_config
from rsanet.engine import NonFiniteLossError, run_training, runner


class DictDataset(Dataset):
    """``n`` random uint8 clips (3, 2, 4, 4) of 3 classes, one view each."""

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 256, (n, 3, 2, 4, 4), dtype=torch.uint8, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.classes, self.num_videos, self.num_views = ["a", "b", "c"], n, 1

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"clip": self.x[i], "label": int(self.y[i]), "index": i, "video": i, "view": 0, "replaced": 0}


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 2 * 4 * 4, 3)

    def forward(self, x):  # (B, 3, 2, 4, 4) -> (B, 3)
        return self.fc(x.flatten(1))


class SomeUnreadable(DictDataset):
    """Samples 2 and 5 were unreadable and replaced (the data pipeline's ``replaced`` count)."""

    def __getitem__(self, i):
        return dict(super().__getitem__(i), replaced=int(i in (2, 5)))


@pytest.fixture
def patched(monkeypatch):
    """run_training on DictDataset(n) with the Linear model; returns a function (n, *opts) -> work dir."""
    def run(tmp_path, n, *opts, name="w", data_cls=DictDataset, **kwargs):
        data = data_cls(n)
        monkeypatch.setattr(runner, "_build_datasets", lambda cfg, splits: {s: data for s in splits})
        monkeypatch.setattr(runner, "prepare_model", lambda cfg, ctx, train: Linear().to(ctx.device))
        cfg = load_config(None, ["model.num_classes=3", "model.pretrained=null", "data.num_workers=0",
                                 "data.val_annotations=val.txt",  # a validation split (the datasets are patched)
                                 "train.warmup_epochs=0", "train.epochs=1", "train.lr_schedule=step",  # full lr
                                 "runtime.tensorboard=false",
                                 "runtime.progress=false", "runtime.log_interval=1", *opts])
        run_training(cfg, tmp_path / name, **kwargs)
        return tmp_path / name
    return run


def weights(work_dir):
    return torch.load(work_dir / "last.pth", weights_only=True)["model"]


def test_accumulation_equals_one_big_batch(tmp_path, patched):
    big = patched(tmp_path, 8, "train.batch_size=8", "train.accumulate=1", name="big")
    acc = patched(tmp_path, 8, "train.batch_size=4", "train.accumulate=2", name="acc")
    torch.manual_seed(0)
    init = Linear().state_dict()  # what run_training starts from (seeded with runtime.seed = 0)
    wb, wa = weights(big), weights(acc)
    assert not torch.allclose(wb["fc.weight"], init["fc.weight"])  # a step was taken
    for k in wb:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
    ck = torch.load(acc / "last.pth", weights_only=True)
    assert ck["global_step"] == 1 and ck["run_state"]["total_batch"] == 8 and "total_batch" not in ck["config"]["train"]
    assert json.loads((acc / "run_state.json").read_text()) == ck["run_state"]  # saved beside config.yaml


def test_gradient_clipping_bounds_the_update(tmp_path, patched):
    # Plain SGD (no momentum, no decay): the update is lr * g * min(1, c / |g|), so |dw| = lr * c when clipped.
    w = patched(tmp_path, 8, "train.batch_size=8", "train.lr=0.64", "train.momentum=0.0", "train.nesterov=false",
                "train.weight_decay=0.0", "train.clip_grad_norm=0.01")  # scaled lr 0.08
    torch.manual_seed(0)
    init = Linear().state_dict()
    moved = torch.cat([(weights(w)[k] - init[k]).flatten() for k in init])
    assert moved.norm().item() == pytest.approx(0.08 * 0.01, rel=1e-4)


def inf_loss(monkeypatch, which):
    real = runner.build_criterion

    def build(cfg):
        base, calls = real(cfg), []

        class Crit(nn.Module):
            def forward(self, logits, target):
                calls.append(1)
                out = base(logits, target)
                return out * float("inf") if which(len(calls)) else out
        return Crit()
    monkeypatch.setattr(runner, "build_criterion", build)


def test_fp16_scaler_skips_an_overflow_and_says_so(tmp_path, patched, monkeypatch):
    inf_loss(monkeypatch, lambda call: call == 1)
    w = patched(tmp_path, 8, "train.batch_size=4", "train.amp=fp16")
    ck = torch.load(w / "last.pth", weights_only=True)
    assert ck["scaler"]["scale"] == 65536.0 * 0.5  # backed off once
    assert ck["global_step"] == 2
    log = (w / "train.log").read_text()
    assert "fp16 loss scaler skipped iteration 1 " in log and log.count("loss scaler skipped") == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_fp16_scaler_calibration_skips_do_not_stop_the_run(tmp_path, patched, monkeypatch):
    """A scripted overflow sequence: steps 1-12 overflow (a scaler still calibrating from 2^16), 13-15 do not.
    The old policy stopped after 10 consecutive skips; the run now goes on at scale 2^16 / 2^12 = 16."""
    inf_loss(monkeypatch, lambda call: call <= 12)
    w = patched(tmp_path, 30, "train.batch_size=2", "train.amp=fp16")
    ck = torch.load(w / "last.pth", weights_only=True)
    assert ck["global_step"] == 15 and ck["scaler"]["scale"] == 2.0 ** 16 / 2 ** 12
    log = (w / "train.log").read_text()
    assert log.count("loss scaler skipped") == 12 and "fp16 loss scaler skipped iteration 12 " in log
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_fp16_run_stops_when_the_loss_scale_collapses(tmp_path, patched, monkeypatch):
    """Overflow on every step: the scale halves each time, and the run stops once it falls below 1
    (2^16 / 2^17 = 0.5 at iteration 17), naming the iteration and the scale."""
    inf_loss(monkeypatch, lambda call: True)
    with pytest.raises(NonFiniteLossError, match=r"fp16 loss scale collapsed to 0.5 \(below 1\) after 17 "
                                                 r"overflows in a row at iteration 17 "):
        patched(tmp_path, 40, "train.batch_size=2", "train.amp=fp16")


def test_non_finite_loss_without_an_overflow_stops_fp32_and_fp16(tmp_path, patched, monkeypatch):
    real = torch.amp.GradScaler  # a low initial scale: 2^16 may overflow these fp16 gradients on its own
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device: real(device, init_scale=2.0 ** 8))
    for amp in ("none", "fp16"):
        calls = []

        def nan_loss(cfg):
            class Crit(nn.Module):
                def forward(self, logits, target):
                    calls.append(1)
                    loss = nn.functional.cross_entropy(logits, target)
                    # step 2: a NaN loss whose gradient is finite (detached), so no fp16 overflow either
                    return loss + (float("nan") * loss).detach() if len(calls) == 2 else loss
            return Crit()
        monkeypatch.setattr(runner, "build_criterion", nan_loss)
        why = "non-finite loss or gradient" if amp == "none" else \
            r"non-finite loss with finite gradients \(not an fp16 overflow\)"
        with pytest.raises(NonFiniteLossError, match=f"{why} at iteration 2 .*loss nan"):
            patched(tmp_path, 8, "train.batch_size=2", f"train.amp={amp}", name=amp)


def test_items_without_a_usable_clip_stay_out_of_the_loss(tmp_path, patched):
    """Label -1 marks a train item whose replacements were all unreadable (an all-zero clip): the update
    equals the one of a batch without it."""
    class WithPlaceholder(DictDataset):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            return dict(item, clip=torch.zeros_like(item["clip"]), label=-1, replaced=1) if i == 3 else item

    class Without(DictDataset):
        def __init__(self, n):
            super().__init__(n + 1)  # the same 8 clips, then item 3 dropped
            keep = [i for i in range(n + 1) if i != 3]
            self.x, self.y, self.num_videos = self.x[keep], self.y[keep], n

    opts = ("train.momentum=0.0", "train.weight_decay=0.0", "data.max_bad_fraction=1.0")
    a = weights(patched(tmp_path, 8, "train.batch_size=8", *opts, data_cls=WithPlaceholder, name="a"))
    # the LR follows the total batch: 7 clips need lr x 8/7 for the same step size as 8 clips
    b = weights(patched(tmp_path, 7, "train.batch_size=7", f"train.lr={0.02 * 8 / 7!r}", *opts, data_cls=Without,
                        name="b"))
    torch.manual_seed(0)
    init = Linear().state_dict()
    assert not torch.allclose(a["fc.weight"], init["fc.weight"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-7)


def test_bf16_autocast_trains(tmp_path, patched):
    w = patched(tmp_path, 8, "train.batch_size=4", "train.amp=bf16", "train.channels_last=true")
    ck = torch.load(w / "last.pth", weights_only=True)
    assert ck["scaler"] is None and ck["global_step"] == 2
    assert all(math.isfinite(v) for v in [ck["best_top1"], ck["last_top1"]])


def test_unreadable_samples_over_the_budget_stop_the_run(tmp_path, patched):
    from rsanet.data import BadDataError
    with pytest.raises(BadDataError, match="2 of 8 train samples"):  # 25% > 20%, counted over the epoch
        patched(tmp_path, 8, "train.batch_size=8", "data.max_bad_fraction=0.2", data_cls=SomeUnreadable)
    w = patched(tmp_path, 8, "train.batch_size=8", "data.max_bad_fraction=0.25", data_cls=SomeUnreadable,
                name="ok")  # exactly at the budget: allowed
    assert torch.load(w / "last.pth", weights_only=True)["global_step"] == 1


def test_loaders_hand_over_uint8_and_evaluation_workers_are_not_persistent():
    """Persistent evaluation workers would sit idle between validations with their prefetched batches in
    shared memory, next to the training loader's; the training loader keeps its workers."""
    from rsanet.dist import DistContext
    from rsanet.engine.loaders import build_eval_loader, build_train_loader
    from rsanet.engine.run_state import RunState

    cfg = load_config(None, ["data.num_workers=1", "train.batch_size=4", "test.batch_size=4"])
    ctx = DistContext(0, 0, 1, torch.device("cpu"), "")
    train, _ = build_train_loader(DictDataset(8), cfg, ctx, RunState.of(cfg, 1))
    val = build_eval_loader(DictDataset(8), cfg, ctx)
    assert train.persistent_workers and not val.persistent_workers
    assert next(iter(val))["clip"].dtype == torch.uint8


def test_a_training_split_with_unlabelled_videos_is_refused(tmp_path, patched):
    """Label -1 in a training batch means "no usable clip" and is left out of the loss, so a training split
    that lists unlabelled videos (say, the official test annotations) must be refused, not trained on zero."""
    from types import SimpleNamespace

    class Unlabelled(DictDataset):
        def __init__(self, n):
            super().__init__(n)
            self.records = [SimpleNamespace(path=f"v{i}", label=-1 if i == 5 else 0) for i in range(n)]

    with pytest.raises(ValueError, match=r"1 of 8 training entries have no label \(-1\), e\.g\. \['v5'\]"):
        patched(tmp_path, 8, "train.batch_size=4", data_cls=Unlabelled)
