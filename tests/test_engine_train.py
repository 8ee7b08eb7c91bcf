"""The training step with tiny in-test modules and datasets that follow the sample-dict contract: gradient
accumulation equals one big batch, gradient clipping bounds the update, and the fp16 loss scaler skips
non-finite steps (and gives up after too many)."""
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from rsanet.config import load_config
from rsanet.engine import NonFiniteLossError, run_training
from rsanet.engine import runner


class DictDataset(Dataset):
    """``n`` random clips (3, 2, 4, 4) of 3 classes, one view each."""

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 2, 4, 4, generator=g)
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
                                 "train.warmup_epochs=0", "train.epochs=1", "runtime.tensorboard=false",
                                 "runtime.progress=false", "runtime.log_interval=1", *opts], world_size=1)
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
    assert ck["global_step"] == 1 and ck["config"]["train"]["total_batch"] == 8


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


def test_fp16_scaler_gives_up_after_consecutive_skips(tmp_path, patched, monkeypatch):
    inf_loss(monkeypatch, lambda call: True)
    with pytest.raises(NonFiniteLossError, match="10 consecutive fp16 steps skipped at iteration 10"):
        patched(tmp_path, 24, "train.batch_size=2", "train.amp=fp16")


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
