"""TSN over torchvision ResNets: torchvision equivalence, TSN consensus, every Table 2 transform in resnet18/50
(forward and backward), stochastic depth statistics, activation checkpointing and initialisation."""
import copy

import pytest
import torch
import torchvision
from torch import nn

from rsanet.backbones.resnet import run_block
from rsanet.config import load_config
from rsanet.models import TSN, build_model

TRANSFORMS = ["rsa", "conv2d", "conv3d", "conv2plus1d", "self_attention"]


def tiny_cfg(arch="resnet50", *opts):
    # Positions include stride-2 blocks (block 0 of stages 2 and 4) for resnet50.
    positions = "[[2],[0,1],[1],[0]]" if arch == "resnet50" else "[[1],[0],[1],[1]]"
    kind = next((o.split("=", 1)[1] for o in opts if o.startswith("model.transform.type=")), "rsa")
    windows = [f"model.transform.{kind}.kernel_size=[3,3,3]"] if kind != "conv2d" else []  # the transform's window
    return load_config(None, [f"model.arch={arch}", "model.width=16", "model.num_classes=5",
                              f"model.transform.positions={positions}", *windows,
                              "model.dropout=0.0", "model.stochastic_depth=0.0", *opts])


def randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN affine parameters and statistics (also undoes the zero-init of the last gammas)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.1
            m.running_mean = torch.randn(m.running_mean.shape, generator=gen) * 0.1
            m.running_var = torch.rand(m.running_var.shape, generator=gen) + 0.5


def test_conv2d_resnet50_matches_torchvision_per_frame(tmp_path):
    gen = torch.Generator().manual_seed(1)
    tv = torchvision.models.resnet50(num_classes=1000)
    randomize_bn(tv, gen)
    path = tmp_path / "resnet50_random.pth"
    torch.save(tv.state_dict(), path)

    cfg = load_config(None, ["model.transform.type=conv2d", f"model.pretrained={path}", "model.num_classes=1000"])
    model = build_model(cfg)
    assert model.pretrained_report.skipped == ["fc"]  # conv2d replaces nothing; the classifier is never loaded
    model.fc.load_state_dict(tv.fc.state_dict())
    model.eval().double()
    tv.eval().double()

    x = torch.randn(2, 3, 3, 64, 64, generator=gen, dtype=torch.float64)  # (B, C, T, H, W)
    with torch.no_grad():
        frame_logits = model.fc(model.features(x)).reshape(2, 3, -1)  # (B*T, K) -> (B, T, K)
        expected = torch.stack([tv(x[:, :, i]) for i in range(3)], dim=1)  # each frame alone: (B, T, K)
        clip_logits = model(x)
    assert expected.abs().max() > 1.0  # a meaningful comparison, not of near-zero logits
    torch.testing.assert_close(frame_logits, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(clip_logits, expected.mean(dim=1), rtol=0, atol=1e-5)  # TSN average consensus


def test_module_names_follow_torchvision():
    for arch in ["resnet18", "resnet34", "resnet50", "resnet101"]:
        with torch.device("meta"):
            ours = build_model(load_config(None, [f"model.arch={arch}", "model.transform.type=conv2d",
                                                  "model.transform.positions=[[],[],[],[]]",
                                                  "model.num_classes=1000"]))
            ref = getattr(torchvision.models, arch)()
        assert list(ours.state_dict()) == list(ref.state_dict())
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("kind", TRANSFORMS)
def test_forward_backward_each_transform(arch, kind):
    model = build_model(tiny_cfg(arch, f"model.transform.type={kind}"))
    randomize_bn(model, torch.Generator().manual_seed(2))  # non-zero last gammas, so gradients reach conv2
    model.train()
    x = torch.randn(2, 3, 4, 32, 32)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.square().mean().backward()
    expected = [] if kind == "conv2d" else (["layer1.2.conv2", "layer2.0.conv2", "layer2.1.conv2", "layer3.1.conv2",
                                             "layer4.0.conv2"] if arch == "resnet50" else
                                            ["layer1.1.conv2", "layer2.0.conv2", "layer3.1.conv2", "layer4.1.conv2"])
    assert model.replaced == expected
    for name in expected:
        params = list(model.get_submodule(name).named_parameters())
        assert params, f"{name} has no parameters"
        for pname, p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}.{pname}"
        assert sum(p.grad.abs().sum() for _, p in params) > 0, f"no gradient reaches {name}"
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_transform_blocks_keep_resolution_and_stride():
    model = build_model(tiny_cfg("resnet50"))
    shapes = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: shapes.__setitem__(n, (tuple(i[0].shape), tuple(o.shape)))) for n in model.replaced]
    model.eval()(torch.randn(2, 3, 4, 32, 32))
    for h in hooks:
        h.remove()
    # conv2 sees (B, C, T, H, W); stride-2 positions halve H and W (v1.5: the stride sits on conv2).
    assert shapes["layer1.2.conv2"] == ((2, 16, 4, 8, 8), (2, 16, 4, 8, 8))
    assert shapes["layer2.0.conv2"] == ((2, 32, 4, 8, 8), (2, 32, 4, 4, 4))
    assert shapes["layer4.0.conv2"] == ((2, 128, 4, 2, 2), (2, 128, 4, 1, 1))


def test_clips_do_not_mix_and_time_order_matters_only_with_a_temporal_transform():
    x = torch.randn(3, 3, 4, 32, 32)
    for kind, temporal in [("conv2d", False), ("conv3d", True), ("rsa", True)]:
        model = build_model(tiny_cfg("resnet50", f"model.transform.type={kind}"))
        randomize_bn(model, torch.Generator().manual_seed(3))
        model.eval()
        with torch.no_grad():
            full = model(x)
            alone = torch.cat([model(x[i:i + 1]) for i in range(3)])  # batch composition must not matter
            reversed_time = model(x.flip(2))
        torch.testing.assert_close(full, alone, rtol=1e-4, atol=1e-5)
        assert (not torch.allclose(full, reversed_time, atol=1e-5)) == temporal, kind


def test_stochastic_depth_drops_whole_clips_with_linear_probabilities():
    sd, clips, t = 0.5, 3000, 2
    model = build_model(load_config(None, ["model.arch=resnet18", "model.width=8", "model.transform.type=conv2d",
                                           "model.transform.positions=[[],[],[],[]]",
                                           f"model.stochastic_depth={sd}"]))
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    n = len(blocks)
    assert n == 8
    gen = torch.Generator().manual_seed(4)
    randomize_bn(model, gen)
    for i, block in enumerate(blocks):
        survival = 1.0 - sd * i / (n - 1)  # the rule, written out independently
        block.train()
        block.relu = nn.Identity()  # out = shortcut + mask * branch exactly, no ReLU in the way
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()  # fixed statistics: branch(x) is then the same with and without dropping
        x = torch.randn(clips * t, block.conv1.in_channels, 4, 4, generator=gen)
        with torch.no_grad():
            out = run_block(model, block, x, t)
            block.drop_path.eval()  # the branch as it is, never dropped
            short = x if block.downsample is None else block.downsample(x)
            branch = run_block(model, block, x, t) - short
            block.drop_path.train()
        scale = ((out - short) * branch).flatten(1).sum(1) / branch.square().flatten(1).sum(1)  # (B*T,)
        scale = scale.reshape(clips, t)
        dropped = scale.abs() < 1e-4
        kept = (scale - 1.0 / survival).abs() < 1e-4
        assert (dropped | kept).all(), "a kept branch must be scaled by exactly 1/p"
        assert (dropped.all(1) | kept.all(1)).all(), "all frames of a clip must share the decision"
        rate = dropped[:, 0].float().mean().item()
        sigma = (survival * (1 - survival) / clips) ** 0.5
        assert abs(rate - (1 - survival)) <= 4.5 * sigma + 1e-9, (i, rate, 1 - survival)


def test_stochastic_depth_is_off_in_eval():
    opts = ["model.arch=resnet18", "model.width=8", "model.transform.type=conv2d",
                                           "model.transform.positions=[[],[],[],[]]"]
    model = build_model(load_config(None, opts + ["model.stochastic_depth=0.9"]))
    plain = build_model(load_config(None, opts + ["model.stochastic_depth=0.0"]))
    randomize_bn(model, torch.Generator().manual_seed(5))
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    x = torch.randn(4, 3, 2, 32, 32)
    with torch.no_grad():
        outs = [model(x) for _ in range(3)]
        ref = plain(x)
    for out in outs:
        torch.testing.assert_close(out, ref, rtol=0, atol=0)  # never dropped, never rescaled


def _one_training_step(ckpt: bool, weights=None):
    """A tiny RSANet with non-trivial BN, stochastic depth and dropout after one forward + backward."""
    model = build_model(tiny_cfg("resnet50", f"model.checkpoint_rsa={str(ckpt).lower()}",
                                 "model.stochastic_depth=0.3", "model.dropout=0.2"))
    randomize_bn(model, torch.Generator().manual_seed(6))
    weights = weights or copy.deepcopy(model.state_dict())
    model.load_state_dict(weights)  # the same weights in both runs
    calls = []
    for name in model.replaced:  # count the transform's forward runs (module hooks skip the recompute)
        module = model.get_submodule(name)
        module.forward = (lambda f: lambda *a: (calls.append(1), f(*a))[1])(module.forward)
    model.train()
    torch.manual_seed(7)
    out = model(torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(8)))
    out.sum().backward()
    return model, out.detach(), len(calls), weights


def test_checkpoint_rsa_recomputes_transforms_with_identical_results():
    model0, out0, calls0, weights = _one_training_step(False)
    model1, out1, calls1, _ = _one_training_step(True, weights)
    assert calls0 == 5 and calls1 == 10  # with checkpointing each transform runs again in backward
    torch.testing.assert_close(out1, out0, rtol=0, atol=0)
    g0 = dict(model0.named_parameters())
    for k, p in model1.named_parameters():
        torch.testing.assert_close(p.grad, g0[k].grad, rtol=1e-5, atol=1e-6, msg=k)


def test_checkpoint_rsa_updates_batchnorm_statistics_once():
    # #18 finding 7: recomputing whole blocks ran their BatchNorms twice (num_batches_tracked 2, running
    # statistics moved twice, SyncBatchNorm collectives repeated); only the transforms are recomputed now
    model0, _, _, weights = _one_training_step(False)
    model1, _, _, _ = _one_training_step(True, weights)
    buffers0 = dict(model0.named_buffers())
    for name, buf in model1.named_buffers():
        if name.endswith("num_batches_tracked"):
            assert buf.item() == 1, name
        torch.testing.assert_close(buf, buffers0[name], rtol=0, atol=0, msg=name)


def _format(t: torch.Tensor) -> str:
    """'cl' or 'std' for a 4-D tensor; 'any' when both layouts describe it (1x1 maps, one channel)."""
    cl, std = t.is_contiguous(memory_format=torch.channels_last), t.is_contiguous()
    return "any" if cl == std else ("cl" if cl else "std")


@pytest.mark.parametrize("channels_last", [False, True])
def test_one_memory_layout_flows_through_the_network(channels_last):
    # #18 finding 3: every 2D conv and BatchNorm (forward and backward) sees activations in the network's
    # layout (channels-last after the trainer's conversion, else standard), so no kernel converts
    # internally; layout-changing copies are exactly: the stem input (channels-last) or one per RSA output
    # (standard layout); no tensor is copied into another layout twice.
    from torch.utils._python_dispatch import TorchDispatchMode

    from rsanet.engine.runner import to_channels_last

    model = build_model(tiny_cfg("resnet50", "model.transform.rsa.kernel_size=[3,5,5]"))
    if channels_last:
        to_channels_last(model)
    want = "cl" if channels_last else "std"
    conv2d = torch.ops.aten.convolution.default
    convs, copies, alive = [], [], []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is conv2d and args[0].dim() == 4:
                convs.append((_format(args[0]), _format(args[1])))
            elif func is torch.ops.aten.convolution_backward.default and args[0].dim() == 4:
                convs.append((_format(args[0]), _format(args[1])))
            elif func in (torch.ops.aten.native_batch_norm.default, torch.ops.aten.native_batch_norm_backward.default):
                convs.append((_format(args[0]), want))
            elif func in (torch.ops.aten.clone.default, torch.ops.aten.copy_.default) and args[0].dim() >= 4:
                src = args[1] if func is torch.ops.aten.copy_.default else args[0]
                dst = args[0] if func is torch.ops.aten.copy_.default else out
                if src.dim() == dst.dim() and src.stride() != dst.stride():
                    copies.append((src.data_ptr(), tuple(src.shape), src.stride()))
                    alive.append(src)  # no storage is freed and reused by another tensor during the step
            return out

    model.train()
    x = torch.randn(2, 3, 4, 32, 32)
    with Watch():
        model(x).sum().backward()
    mismatched = [c for c in convs if any(f not in (want, "any") for f in c)]
    assert not mismatched, f"{len(mismatched)} of {len(convs)} 2D convs / BNs see another layout: {mismatched[:3]}"
    assert len(copies) == len(set(copies)), "a tensor was copied into another layout twice"


def test_init_msra_zero_last_gamma_and_classifier():
    torch.manual_seed(0)
    model = build_model(load_config(None))  # default RSANet-R50, no checkpoint
    for block in (b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer):
        assert torch.count_nonzero(block.bn3.weight) == 0
        assert torch.all(block.bn1.weight == 1) and torch.all(block.bn1.bias == 0)
    w = model.layer3[0].conv1.weight  # 1x1 conv 512 -> 256: MSRA fan_out std = sqrt(2 / 256)
    assert abs(w.std().item() - (2 / 256) ** 0.5) < 0.05 * (2 / 256) ** 0.5
    xavier = (2 / (2048 + 174)) ** 0.5  # the authors' xavier_uniform_ classifier (model.classifier_init)
    assert abs(model.fc.weight.std().item() - xavier) < 0.05 * xavier and torch.all(model.fc.bias == 0)
    # the transforms keep their own init (e.g. RSA's identity I), untouched by the backbone's MSRA pass
    rsa = model.get_submodule("layer3.1.conv2")
    torch.testing.assert_close(rsa.I, torch.eye(rsa.I.shape[0]))


def test_bad_input_shape_is_named():
    model = build_model(tiny_cfg("resnet18"))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\).*\(2, 3, 32, 32\)"):
        model(torch.randn(2, 3, 32, 32))


def test_direct_construction_validates_positions():
    cfg = copy.deepcopy(load_config(None).model)
    cfg.transform.positions = [[0], [0], [9], [0]]
    with pytest.raises(ValueError, match="model.transform.positions: 'layer3.9.conv2' is not a conv of resnet50"):
        TSN(cfg)
