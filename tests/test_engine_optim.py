"""Optimizer recipe: parameter groups, LR scaling, warm-up + cosine schedule and label smoothing, each checked
against values worked out by hand."""
import math

import pytest
import torch
from torch import nn

from rsanet.config import load_config
from rsanet.engine.optim import WarmupCosine, build_criterion, build_optimizer, build_scheduler, param_groups


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm3d(4)
        self.conv2 = nn.Conv2d(4, 4, 1, bias=True)
        self.fc = nn.Linear(4, 5)
        self.pos = nn.Parameter(torch.zeros(2, 7))  # a 2-D embedding: decayed
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)


def test_param_groups_no_decay_on_bn_and_bias():
    groups = param_groups(Tiny(), weight_decay=5e-4)
    decay, no_decay = groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert sorted(decay["names"]) == ["conv.weight", "conv2.weight", "fc.weight", "pos"]
    assert sorted(no_decay["names"]) == ["bn.bias", "bn.weight", "conv2.bias", "fc.bias"]


def test_build_optimizer_is_nesterov_sgd_at_scaled_lr():
    cfg = load_config(None, ["train.batch_size=8", "train.lr=0.02"], world_size=2)  # total 16 -> 0.005
    opt = build_optimizer(cfg, Tiny())
    assert isinstance(opt, torch.optim.SGD)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.005) and g["momentum"] == 0.9 and g["nesterov"] is True
    assert sum(len(g["params"]) for g in opt.param_groups) == 8  # the frozen one is left out


def test_real_model_groups_match_a_hand_made_list():
    from rsanet.models import build_model
    cfg = load_config(None, ["model.arch=resnet18", "model.width=8", "model.num_classes=5",
                             "model.transform.positions=[[1],[1],[1],[1]]", "model.transform.kernel_size=[3,3,3]",
                             "model.pretrained=null"])
    model = build_model(cfg)
    decay, no_decay = param_groups(model, 1e-4)
    expected_no_decay = {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                         for n in (f"{n}.weight", f"{n}.bias")}
    expected_no_decay |= {f"{n}.bias" for n, m in model.named_modules()
                          if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)) and m.bias is not None}
    assert set(no_decay["names"]) == expected_no_decay
    assert set(decay["names"]) == {n for n, _ in model.named_parameters()} - expected_no_decay
    assert any(".conv2.H1" in n for n in decay["names"])  # the RSA kernels are decayed like conv weights


def lrs_over(cfg, steps_per_epoch):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.train.scaled_lr)
    sched = build_scheduler(cfg, opt, steps_per_epoch)
    out = []
    for _ in range(cfg.train.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_hand_values():
    # 4 processes x 8 clips x accumulate 2 = 64 clips: the reference batch, so the LR is 0.02 unchanged.
    cfg = load_config(None, ["train.epochs=10", "train.warmup_epochs=2", "train.batch_size=8",
                             "train.accumulate=2"], world_size=4)
    assert cfg.train.scaled_lr == pytest.approx(0.02)
    lrs = lrs_over(cfg, steps_per_epoch=5)  # 50 steps, 10 of warm-up, 40 of cosine
    assert len(lrs) == 50
    assert lrs[0] == pytest.approx(0.002)  # 0.02 * 1/10
    assert lrs[4] == pytest.approx(0.010)  # 0.02 * 5/10
    assert lrs[9] == pytest.approx(0.020)  # end of warm-up
    assert lrs[10] == pytest.approx(0.020)  # cosine starts at the peak
    assert lrs[30] == pytest.approx(0.010)  # half-way through the cosine
    assert lrs[20] == pytest.approx(0.02 * (1 + math.sqrt(0.5)) / 2)  # a quarter: cos(pi/4)
    assert lrs[49] == pytest.approx(0.02 * (1 + math.cos(math.pi * 39 / 40)) / 2)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))  # monotone up
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone down


def test_lr_scales_linearly_with_total_batch_and_min_lr():
    cfg = load_config(None, ["train.epochs=4", "train.warmup_epochs=0", "train.batch_size=8",
                             "train.lr=0.02", "train.min_lr=0.0001"], world_size=1)
    assert cfg.train.total_batch == 8 and cfg.train.scaled_lr == pytest.approx(0.0025)  # 0.02 * 8 / 64
    lrs = lrs_over(cfg, steps_per_epoch=2)
    assert lrs[0] == pytest.approx(0.0025)
    # step 4 of 8: progress 1/2 -> min + (peak - min) / 2
    assert lrs[4] == pytest.approx(0.0001 + (0.0025 - 0.0001) / 2)
    assert min(lrs) > 0.0001


def test_warmup_cosine_factor_edges():
    f = WarmupCosine(warmup_steps=0, total_steps=4)
    assert [round(f(s), 6) for s in range(4)] == [1.0, round((1 + math.cos(math.pi / 4)) / 2, 6), 0.5,
                                                  round((1 + math.cos(3 * math.pi / 4)) / 2, 6)]
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(5, 4)


def test_label_smoothing_hand_value():
    cfg = load_config(None, ["train.label_smoothing=0.1"])
    crit = build_criterion(cfg)
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0, 0.0]])  # p = [2/5, 1/5, 1/5, 1/5]
    # 0.9 * -log(2/5) + 0.1 * mean(-log p) = 0.9 * log 2.5 + 0.1 * (log 2.5 + 3 log 5) / 4
    expected = 0.9 * math.log(2.5) + 0.1 * (math.log(2.5) + 3 * math.log(5.0)) / 4
    assert expected == pytest.approx(0.968277, abs=1e-6)
    assert crit(logits, torch.tensor([0])).item() == pytest.approx(expected, abs=1e-6)
    plain = build_criterion(load_config(None, ["train.label_smoothing=0.0"]))
    assert plain(logits, torch.tensor([0])).item() == pytest.approx(math.log(2.5), abs=1e-6)
