"""Optimizer recipe: parameter groups, LR scaling, warm-up + cosine schedules (per step, and per epoch as in the
authors' code) and label smoothing, each checked against values worked out by hand or printed in the authors'
training logs."""
import json
import math

import pytest
import torch
from torch import nn

from rsanet.config import load_config
from rsanet.engine.optim import (
    EpochWarmupCosine,
    WarmupCosine,
    build_criterion,
    build_optimizer,
    build_scheduler,
    param_groups,
)
from rsanet.engine.run_state import RunState

STEP = ["train.lr_schedule=step", "train.min_lr_ratio=0"]  # our per-step schedule, decaying to 0

# The LR column of the authors' SS-V1 16-frame log (logs/RSA_R50_SSV1_16frames.log of KimManjin/RSA, "lr: %.5f"
# on every "Epoch: [e][i/1345]" line; one value per epoch, e = 0..79; the SS-V2 log prints the same 80 values).
LOGGED_LR = """
0.00402 0.00801 0.01201 0.01600 0.02000 0.01999 0.01996 0.01992 0.01986 0.01978 0.01969 0.01957 0.01944 0.01930
0.01914 0.01896 0.01876 0.01856 0.01833 0.01809 0.01784 0.01757 0.01729 0.01700 0.01669 0.01638 0.01605 0.01571
0.01536 0.01501 0.01464 0.01426 0.01388 0.01349 0.01310 0.01270 0.01229 0.01188 0.01147 0.01105 0.01064 0.01022
0.00980 0.00938 0.00897 0.00855 0.00814 0.00773 0.00732 0.00692 0.00653 0.00614 0.00576 0.00538 0.00502 0.00466
0.00431 0.00397 0.00364 0.00333 0.00302 0.00273 0.00245 0.00218 0.00193 0.00169 0.00146 0.00126 0.00106 0.00088
0.00072 0.00058 0.00045 0.00033 0.00024 0.00016 0.00010 0.00006 0.00003 0.00002
""".split()


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
    cfg = load_config(None, ["train.batch_size=8", "train.lr=0.02"])
    opt = build_optimizer(cfg, Tiny(), RunState.of(cfg, world_size=2))  # total 16 -> 0.005
    assert isinstance(opt, torch.optim.SGD)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.005) and g["momentum"] == 0.9 and g["nesterov"] is True
    assert sum(len(g["params"]) for g in opt.param_groups) == 8  # the frozen one is left out


def test_real_model_groups_match_a_hand_made_list():
    from rsanet.models import build_model
    cfg = load_config(None, ["model.arch=resnet18", "model.width=8", "model.num_classes=5",
                             "model.transform.positions=[[1],[1],[1],[1]]", "model.transform.rsa.kernel_size=[3,3,3]",
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


def lrs_over(cfg, steps_per_epoch, world_size=1):
    run = RunState.of(cfg, world_size)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=run.scaled_lr)
    sched = build_scheduler(cfg, opt, steps_per_epoch, run)
    out = []
    for _ in range(cfg.train.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_hand_values():
    # 4 processes x 8 clips x accumulate 2 = 64 clips: the reference batch, so the LR is 0.02 unchanged.
    cfg = load_config(None, ["train.epochs=10", "train.warmup_epochs=2", "train.batch_size=8",
                             "train.accumulate=2", *STEP])
    assert RunState.of(cfg, world_size=4).scaled_lr == pytest.approx(0.02)
    lrs = lrs_over(cfg, steps_per_epoch=5, world_size=4)  # 50 steps, 10 of warm-up, 40 of cosine
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
                             "train.lr=0.02", "train.min_lr=0.0001", "train.lr_schedule=step"])
    run = RunState.of(cfg, world_size=1)
    assert run.total_batch == 8 and run.scaled_lr == pytest.approx(0.0025)  # 0.02 * 8 / 64
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


def test_epoch_schedule_reproduces_the_authors_logged_lr():
    """80 epochs at lr 0.02 (total batch 64 = 8 processes x 8 clips): every step of epoch e trains at the
    logged value of epoch e, to the 5 printed decimals."""
    cfg = load_config(None, ["train.epochs=80", "train.batch_size=8"])  # defaults: epoch, 1e-3
    assert cfg.train.lr_schedule == "epoch" and RunState.of(cfg, world_size=8).scaled_lr == pytest.approx(0.02)
    steps = 3
    lrs = lrs_over(cfg, steps_per_epoch=steps, world_size=8)
    per_epoch = [lrs[e * steps:(e + 1) * steps] for e in range(80)]
    assert all(len(set(v)) == 1 for v in per_epoch)  # constant within an epoch
    assert [f"{v[0]:.5f}" for v in per_epoch] == LOGGED_LR
    assert len(LOGGED_LR) == 80 and per_epoch[4][0] == pytest.approx(0.02) and per_epoch[79][0] == pytest.approx(2e-5)


def epoch_lrs(steps_per_epoch, epochs, warmup_epochs, min_factor=0.0, steps=None):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = EpochWarmupCosine(opt, steps_per_epoch, epochs, warmup_epochs, min_factor)
    out = []
    for _ in range(steps or steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_epoch_schedule_hand_values_and_edges():
    f = epoch_lrs(steps_per_epoch=10, epochs=80, warmup_epochs=5, min_factor=1e-3, steps=1000)
    assert f[0] == f[9] == pytest.approx(1e-3 * 0.8 + 0.2)  # epoch 0 trains at k = 1
    assert f[10] == pytest.approx(1e-3 * 0.6 + 0.4) and f[40] == pytest.approx(1.0)  # epoch 4: the peak
    assert f[50] == pytest.approx(1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi / 75)) / 2)
    assert f[790] == pytest.approx(1e-3) and f[999] == pytest.approx(1e-3)  # the last epoch and beyond
    no_warmup = epoch_lrs(steps_per_epoch=1, epochs=4, warmup_epochs=0)
    assert no_warmup == pytest.approx([(1 + math.cos(math.pi * k / 4)) / 2 for k in (1, 2, 3, 4)])
    assert epoch_lrs(steps_per_epoch=2, epochs=3, warmup_epochs=3)[5] == 0.0  # all warm-up: the last is the min
    with pytest.raises(ValueError, match="warmup_epochs"):
        epoch_lrs(steps_per_epoch=1, epochs=4, warmup_epochs=5)


def test_epoch_schedule_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    cfg = load_config(None, ["train.epochs=6", "train.warmup_epochs=2"])
    run = RunState.of(cfg, world_size=8)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=run.scaled_lr)
    sched = build_scheduler(cfg, opt, 4, run)
    for _ in range(9):
        opt.step()
        sched.step()
    torch.save(sched.state_dict(), tmp_path / "s.pth")
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=run.scaled_lr)
    again = build_scheduler(cfg, opt2, 4, run)
    again.load_state_dict(torch.load(tmp_path / "s.pth", weights_only=True))
    for _ in range(10):
        opt.step(), sched.step(), opt2.step(), again.step()
        assert again.get_last_lr() == sched.get_last_lr()


def test_epoch_schedule_follows_the_real_batch_and_min_lr():
    cfg = load_config(None, ["train.epochs=10", "train.warmup_epochs=2", "train.batch_size=8"])
    lrs = lrs_over(cfg, steps_per_epoch=2)  # total batch 8: lr 0.0025
    assert lrs[0] == pytest.approx(0.0025 * (1e-3 * 0.5 + 0.5)) and lrs[2] == pytest.approx(0.0025)
    assert lrs[-1] == pytest.approx(0.0025 * 1e-3)
    absolute = load_config(None, ["train.epochs=10", "train.warmup_epochs=2", "train.min_lr=0.0001"])
    assert lrs_over(absolute, steps_per_epoch=2)[-1] == pytest.approx(0.0001)  # min_lr replaces min_lr_ratio


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


def test_run_state_is_where_the_total_batch_and_the_lr_are_computed(tmp_path):
    cfg = load_config(None, ["train.batch_size=6", "train.accumulate=3", "train.lr=0.04",
                             "train.lr_reference_batch=32"])
    run = RunState.of(cfg, world_size=4)
    assert (run.world_size, run.batch_size, run.accumulate) == (4, 6, 3)
    assert run.clips_per_process == 18 and run.total_batch == 72  # 6 x 3 per process, x 4 processes
    assert run.scaled_lr == pytest.approx(0.04 * 72 / 32)
    assert run.describe() == ("total batch 72 = 6 x 4 x 3 (train.batch_size x processes x train.accumulate); "
                              "lr 0.09 (= train.lr 0.04 x 72/32)")
    saved = run.save(tmp_path / "run_state.json")
    assert json.loads(saved.read_text()) == run.as_dict() and RunState(**run.as_dict()) == run
    with pytest.raises(ValueError, match="world size must be positive"):
        RunState.of(cfg, world_size=0)
