"""Conversion between the authors' checkpoint format and ours: round trips, the rewrites towards their format,
what is refused, bad files, config keys named on a mismatch, and tools/convert_checkpoint.py.

Tiny models (ResNet-50 structure at width 8, 3x3x3 windows) keep this fast; the exactness against the
authors' own code is in test_official_fixtures.py.
"""
import re
import shlex

import pytest
import torch
from authors_support import load_json, recipe_state
from test_tools_support import load_tool

from rsanet.config import config_to_dict, load_config
from rsanet.engine.checkpoint import CheckpointError, load_checkpoint
from rsanet.engine.weights import init_from_checkpoint, read_model_weights
from rsanet.inference import load_model
from rsanet.models import build_model
from rsanet.models.official import (
    AuthorsFormatError,
    authors_checkpoint,
    authors_to_native,
    model_mismatches,
    native_to_authors,
)

BASE = ["model.width=8", "model.num_segments=4", "model.pretrained=null", "model.transform.rsa.kernel_size=[3,3,3]",
        "model.transform.rsa.queries=2", "model.num_classes=10", "model.transform.rsa.l2_eps=1.0e-6"]
VARIANTS = {
    "default": [],
    "kernel_relational": ["model.transform.rsa.kernel=[relational]"],
    "context_basic": ["model.transform.rsa.context=[basic]"],
    "context_relational": ["model.transform.rsa.context=[relational]"],
    "latent_2": ["model.transform.rsa.latent_dim=2"],
    "queries_4": ["model.transform.rsa.queries=4"],
    "queries_1": ["model.transform.rsa.queries=1"],
    "window_1x3x5": ["model.transform.rsa.kernel_size=[1,3,5]"],
    "positions": ["model.transform.positions=[[1],[],[2,3],[]]"],
    "groups_per_channel_explicit": ["model.transform.positions=[[1],[],[],[]]", "model.transform.rsa.groups=4"],
    "tsn": ["model.transform.type=conv2d"],
    "no_dropout": ["model.dropout=0.0"],
}


def tiny(*opts):
    """BASE with ``opts``; BASE's RSA options are left out when ``opts`` choose another transform."""
    other = any(o.startswith("model.transform.type=") and o != "model.transform.type=rsa" for o in opts)
    return load_config(None, [o for o in BASE if not (other and o.startswith("model.transform.rsa."))] + list(opts))


def randomized(cfg, seed=0):
    """A model of ``cfg`` with every tensor random (BN statistics and zero-init gammas included)."""
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith(("running_var", "bn3.weight")) else
                        torch.randn_like(t) * 0.3)
    return model


def clip(cfg, seed=1):
    torch.manual_seed(seed)
    return torch.randn(2, 3, cfg.model.num_segments, 32, 32)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_ours_to_theirs_to_ours_reproduces_every_tensor(name):
    cfg = tiny(*VARIANTS[name])
    state = randomized(cfg).state_dict()
    theirs = native_to_authors(state, cfg.model)
    assert all(k.startswith(("module.base_model.", "module.new_fc.")) for k in theirs)
    assert ("module.new_fc.weight" in theirs) == (cfg.model.dropout > 0)
    back, inferred = authors_to_native(theirs)
    assert model_mismatches(inferred, cfg.model) == []  # the shapes say which config built it
    assert sorted(back) == sorted(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_their_layout_is_channel_major_and_3d():
    """The converted tensors have their shapes: 3D convs with temporal size 1, Conv1d classifier, projection
    stacking q, k, v, and bn2/conv3 of an RSA block permuted to their channel-major output order."""
    cfg = tiny()
    state = randomized(cfg).state_dict()
    theirs = native_to_authors(state, cfg.model)
    p = "module.base_model."
    assert theirs[p + "conv1.weight"].shape == (8, 3, 1, 7, 7)
    assert theirs["module.new_fc.weight"].shape == (10, 256, 1)
    assert theirs[p + "layer1.2.conv2.projection.weight"].shape == (8 + 4 + 4, 8, 1, 1, 1)
    assert theirs[p + "layer1.2.conv2.H1.weight"].shape == (4 * 4, 1, 3, 3, 3)
    # our bn2 channel l*C_Q + c is their channel c*L + l (L = 2, C_Q = 4)
    ours_bn, their_bn = state["layer1.2.bn2.weight"], theirs[p + "layer1.2.bn2.weight"]
    for q in range(2):
        for c in range(4):
            assert their_bn[c * 2 + q] == ours_bn[q * 4 + c]
    assert torch.equal(theirs[p + "layer1.1.bn2.weight"], state["layer1.1.bn2.weight"])  # no RSA there


@pytest.mark.parametrize("opts", [["model.transform.rsa.kernel=[basic]", "model.transform.rsa.latent_dim=2"],
                                  ["model.transform.rsa.groups=1"], ["model.transform.rsa.groups=2"]],
                         ids=["basic_kernel_P1_into_H2", "groups_1_expanded", "groups_2_expanded"])
def test_rewrites_towards_their_format_keep_the_outputs(opts):
    """Variants their layer cannot hold as such (basic-only kernel with a learned P1, grouped H1) are rewritten
    into equivalent tensors: the model read back computes the same logits (float64)."""
    cfg = tiny(*opts)
    model = randomized(cfg).double()
    back, inferred = authors_to_native(native_to_authors(model.state_dict(), cfg.model))
    cfg2 = load_config(None, BASE + [f"model.transform.rsa.{k}={v}" for k, v in
                                     (("latent_dim", inferred["transform"]["rsa"]["latent_dim"]),
                                      ("groups", inferred["transform"]["rsa"]["groups"]))]
                       + [o for o in opts if "latent" not in o and "groups" not in o])
    other = build_model(cfg2).double().eval()
    other.load_state_dict(back)
    x = clip(cfg).double()
    with torch.no_grad():
        a, b = model(x), other(x)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("opts,match", [
    (["model.transform.rsa.norm=batchnorm"], "norm=batchnorm"),
    (["model.transform.rsa.norm=none"], "norm=none"),
    (["model.transform.positions=[[0],[],[],[]]"], "block 0"),
    (["model.transform.type=conv3d"], "conv3d"),
    (["model.transform.rsa.kernel_size=[2,3,3]"], "odd sizes"),
])
def test_what_their_code_cannot_express_is_refused(opts, match):
    cfg = tiny(*opts)
    with pytest.raises(AuthorsFormatError, match=match):
        native_to_authors(build_model(cfg).state_dict(), cfg.model)
    cfg = load_config(None, ["model.arch=resnet18", "model.width=8", "model.pretrained=null",
                             "model.transform.positions=[[1],[],[],[]]"])
    with pytest.raises(AuthorsFormatError, match="bottleneck"):
        native_to_authors(build_model(cfg).state_dict(), cfg.model)


@pytest.fixture(scope="module")
def authors_file(tmp_path_factory):
    """A tiny authors'-format file (ResNet-50 structure at width 8, 174 classes) and the model it came from."""
    cfg = tiny("model.num_classes=174")
    model = randomized(cfg)
    path = tmp_path_factory.mktemp("authors") / "resnet_rgb_model_best.pth.tar"
    torch.save(authors_checkpoint(native_to_authors(model.state_dict(), cfg.model), epoch=50, best_prec1=65.8), path)
    return path, cfg, model


def test_truncated_file_is_a_clear_error(authors_file, tmp_path):
    path = tmp_path / "cut.pth.tar"
    path.write_bytes(authors_file[0].read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match=rf"cannot read checkpoint {re.escape(str(path))}"):
        read_model_weights(path)


def _their_keys(state, drop=(), **replace):
    out = {k: v for k, v in state.items() if not any(d in k for d in drop)}
    out.update(replace)
    return out


@pytest.mark.parametrize("case,match", [
    ("tsm", "no Conv1d classifier"),
    ("resnet101", r"bottleneck blocks \[3, 4, 23, 3\]|missing"),
    ("basic_blocks", "their code builds ResNet-50 only"),
    ("temporal_conv", "temporal convolution"),
    ("dv_differs", "dv != dk"),
])
def test_checkpoint_of_another_architecture_is_refused(authors_file, tmp_path, case, match):
    theirs = torch.load(authors_file[0], weights_only=True)["state_dict"]
    p = "module.base_model."
    if case == "tsm":  # a TSM/TSN checkpoint: 2D convs and a Linear classifier under the same prefixes
        theirs = {k: (v.squeeze(2) if v.dim() == 5 else v) for k, v in theirs.items()}
        theirs["module.new_fc.weight"] = theirs["module.new_fc.weight"][..., 0]
    elif case == "resnet101":
        theirs = dict(theirs, **{f"{p}layer3.22.bn1.weight": torch.ones(32)})
    elif case == "basic_blocks":
        theirs = {k: v for k, v in theirs.items() if ".conv3." not in k and ".bn3." not in k}
    elif case == "temporal_conv":
        theirs = dict(theirs, **{f"{p}layer1.1.conv2.weight": torch.zeros(8, 8, 3, 3, 3)})
    else:
        w = theirs[f"{p}layer1.2.conv2.projection.weight"]
        theirs = dict(theirs, **{f"{p}layer1.2.conv2.projection.weight": torch.cat([w, w[:2]])})
    path = tmp_path / f"{case}.pth.tar"
    torch.save({"epoch": 1, "arch": "ResNet", "state_dict": theirs, "best_prec1": 0.0}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))) as info:
        read_model_weights(path)
    assert re.search(match, str(info.value)), str(info.value)


@pytest.mark.parametrize("opts,keys", [
    (["model.num_classes=48"], ["model.num_classes"]),
    (["model.transform.rsa.kernel_size=[5,7,7]"], ["model.transform.rsa.kernel_size"]),
    (["model.transform.rsa.queries=4"], ["model.transform.rsa.queries"]),
    (["model.transform.rsa.latent_dim=2"], ["model.transform.rsa.latent_dim"]),
    (["model.transform.positions=[[1],[1],[1],[1]]"], ["model.transform.positions"]),
    (["model.transform.rsa.kernel=[relational]", "model.transform.rsa.context=[basic]"],
     ["model.transform.rsa.kernel", "model.transform.rsa.context"]),
    (["model.transform.rsa.l2_eps=0.0"], ["model.transform.rsa.l2_eps"]),
    (["model.width=16", "model.num_classes=48"], ["model.width", "model.num_classes"]),
])
def test_a_config_that_does_not_fit_names_the_keys_that_would(authors_file, opts, keys):
    """The error names the file, each differing config key, and an --opts line that makes it load."""
    path, cfg, model = authors_file
    wrong = tiny("model.num_classes=174", *opts)
    with pytest.raises(CheckpointError) as info:
        load_model(wrong, path)
    message = str(info.value)
    assert str(path) in message and "does not fit" in message
    for key in keys:
        assert f"{key} is " in message
    fix = shlex.split(message.split("--opts ", 1)[1])
    fixed = load_model(tiny("model.num_classes=174", *opts, *fix), path)
    x = clip(cfg)
    with torch.no_grad():
        assert torch.allclose(fixed(x), model(x), rtol=1e-5, atol=1e-6)


def test_resuming_from_an_authors_file_points_to_init_from(authors_file):
    with pytest.raises(CheckpointError, match="model.init_from"):
        load_checkpoint(authors_file[0])


def test_init_from_loads_all_but_a_classifier_of_another_size(authors_file):
    path, cfg, model = authors_file
    target = build_model(tiny("model.num_classes=48"))
    own_fc = target.fc.weight.detach().clone()
    report = init_from_checkpoint(target, path, tiny("model.num_classes=48").model)
    assert report.kind == "authors" and report.reinitialized == ["fc.weight", "fc.bias"]
    assert "174 classes" in report.reason and "48" in report.reason
    expected = model.state_dict()
    assert sorted(report.loaded) == sorted(k for k in expected if not k.startswith("fc."))
    for k, v in target.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, expected[k]), k
    assert torch.equal(target.fc.weight, own_fc)
    with pytest.raises(CheckpointError, match="model.transform.rsa.kernel_size is"):  # another network: refused
        init_from_checkpoint(build_model(tiny("model.transform.rsa.kernel_size=[1,3,3]")), path,
                             tiny("model.transform.rsa.kernel_size=[1,3,3]").model)


def test_convert_tool_both_ways_on_the_full_model(tmp_path, capsys):
    """The recipe's full-size authors' model: theirs -> ours (resolved config, provenance), the converted file
    loads without a config; ours -> theirs gives back every tensor of the original file."""
    model_json = load_json("model.json")
    theirs = recipe_state(model_json["manifest"], model_json["seed"])
    src = tmp_path / "resnet_rgb_model_best.pth.tar"
    torch.save(authors_checkpoint(theirs, epoch=50, best_prec1=65.779), src)
    tool = load_tool("convert_checkpoint")
    assert tool.main([str(src), str(tmp_path / "ours.pth")]) == 1
    assert "model.num_segments" in capsys.readouterr().err  # T is not in their file
    assert tool.main([str(src), str(tmp_path / "ours.pth"), "--opts", "model.num_segments=16"]) == 0
    assert "T = model.num_segments = 16" in capsys.readouterr().out
    ours = load_checkpoint(tmp_path / "ours.pth", require_training_state=False)
    model_cfg = ours["config"]["model"]
    assert model_cfg["num_segments"] == 16 and model_cfg["transform"]["rsa"]["l2_eps"] == 1e-6
    assert ours["source"]["authors_best_prec1"] == 65.779 and len(ours["source"]["sha256"]) == 64
    from rsanet.inference import resolve_config
    cfg = resolve_config(None, tmp_path / "ours.pth")
    assert config_to_dict(cfg.model) == ours["config"]["model"]
    assert tool.main([str(tmp_path / "ours.pth"), str(tmp_path / "back.pth.tar"), "--to", "official"]) == 0
    back = torch.load(tmp_path / "back.pth.tar", weights_only=True)
    assert back["arch"] == "ResNet" and back["epoch"] == 0
    assert list(back["state_dict"]) == [k for k, _ in model_json["manifest"]]  # their order, their keys
    for k, v in theirs.items():
        assert torch.equal(back["state_dict"][k], v), k


def test_convert_tool_refuses_a_model_their_code_cannot_build(authors_file, tmp_path, capsys):
    path, cfg, model = authors_file
    native = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg)}, native)
    code = load_tool("convert_checkpoint").main([str(native), str(tmp_path / "x.pth.tar"), "--to", "official"])
    assert code == 1 and "64-wide ResNet-50" in capsys.readouterr().err
    assert not (tmp_path / "x.pth.tar").exists()


def test_rsa_l2_eps_is_the_authors_norm_and_the_reference_follows_it():
    """model.transform.rsa.l2_eps > 0 normalizes as x / sqrt(|x|^2 + eps) in the fast layer and in the literal Eq. 11
    reference alike; on inputs with near-zero q, k, v it differs from the default norm."""
    from rsanet.ops import RSA, rsa_reference

    torch.manual_seed(0)
    x = torch.randn(1, 8, 3, 4, 5, dtype=torch.float64) * 1e-3  # tiny features: the eps matters
    layer = RSA(8, 8, kernel_size=(3, 3, 3), queries=2, l2_eps=1e-6).double()
    with torch.no_grad():
        fast, ref = layer(x), rsa_reference(layer, x)
        assert torch.allclose(fast, ref, rtol=1e-10, atol=1e-12)
        layer.l2_eps = 0.0
        assert (layer(x) - fast).abs().max() > 1e-2 * fast.abs().max()


@pytest.mark.parametrize("memory", ["save", "recompute"])
def test_rsa_l2_eps_gradients_equal_the_reference(memory):
    """The fast layer's hand-written backward of the eps norm gives the reference's gradients (autograd
    through the literal Eq. 11 formulation), for the input and every parameter, in both memory modes."""
    from rsanet.ops import RSA, rsa_reference

    torch.manual_seed(1)
    x = (torch.randn(1, 8, 3, 4, 5, dtype=torch.float64) * 1e-3).requires_grad_()
    layer = RSA(8, 8, kernel_size=(3, 3, 3), queries=2, l2_eps=1e-6, memory=memory).double()
    w = torch.randn(1, 8, 3, 4, 5, dtype=torch.float64)
    grads = []
    for fn in (layer, lambda z: rsa_reference(layer, z)):
        params = [x] + list(layer.parameters())
        grads.append(torch.autograd.grad((fn(x) * w).sum(), params))
    for fast, ref in zip(*grads):
        torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-12)


def test_our_checkpoint_of_another_config_names_the_keys(tmp_path):
    """A checkpoint of ours that does not fit the config: the error lists the stored config's differing keys."""
    cfg = tiny("model.transform.rsa.kernel_size=[1,3,3]", "model.num_classes=7")
    path = tmp_path / "best.pth"
    torch.save({"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg)}, path)
    with pytest.raises(CheckpointError, match=re.escape("model.num_classes=7 model.transform.rsa.kernel_size=[1,3,3]")):
        load_model(tiny(), path)
    with pytest.raises(CheckpointError, match=re.escape("model.transform.rsa.kernel_size=[1,3,3]")):
        init_from_checkpoint(build_model(tiny()), path, tiny().model)


def test_convert_tool_says_which_direction_fits_the_input(authors_file, tmp_path, capsys):
    path, cfg, model = authors_file
    tool = load_tool("convert_checkpoint")
    assert tool.main([str(path), str(tmp_path / "x.pth.tar"), "--to", "official"]) == 1
    assert "already an authors' checkpoint" in capsys.readouterr().err
    native = tmp_path / "ours.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg)}, native)
    assert tool.main([str(native), str(tmp_path / "y.pth")]) == 1
    assert "pass --to official" in capsys.readouterr().err
