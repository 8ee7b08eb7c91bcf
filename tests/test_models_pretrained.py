"""ImageNet initialisation from torchvision checkpoints: what is loaded, what is skipped, and clear errors."""
import pytest
import torch
import torchvision
from torch import nn

from rsanet.config import load_config
from rsanet.models import PretrainedMismatchError, build_model, load_pretrained
from rsanet.models.pretrained import PretrainedFileError

DEFAULT_RSA_CONVS = ["layer1.2.conv2", "layer2.1.conv2", "layer2.3.conv2", "layer3.1.conv2", "layer3.3.conv2",
                     "layer3.5.conv2", "layer4.1.conv2"]  # recipe.md: blocks 2 | 1, 3 | 1, 3, 5 | 1


class NotATensor:
    """Pickled next to the weights to check that checkpoints load with weights_only=True."""


@pytest.fixture(scope="module")
def r50_checkpoint(tmp_path_factory):
    """A torchvision ResNet-50 with random weights and non-trivial BN statistics, saved as torchvision does."""
    gen = torch.Generator().manual_seed(11)
    tv = torchvision.models.resnet50()
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = torch.randn(m.running_mean.shape, generator=gen)
            m.running_var = torch.rand(m.running_var.shape, generator=gen) + 0.5
            m.num_batches_tracked.fill_(7)
    path = tmp_path_factory.mktemp("ckpt") / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    return path, tv.state_dict()


def default_model(**over):
    opts = [f"model.{k}={v}" for k, v in over.items()]
    return build_model(load_config(None, opts))


def test_default_rsanet_reports_the_seven_rsa_convs_and_the_classifier(r50_checkpoint):
    path, sd = r50_checkpoint
    model = default_model(pretrained=str(path), transform_block_init="pretrained")
    report = model.pretrained_report
    assert report.skipped == ["fc"] + DEFAULT_RSA_CONVS and report.reinitialized == []
    skipped_keys = {"fc.weight", "fc.bias"} | {f"{n}.weight" for n in DEFAULT_RSA_CONVS}
    assert report.loaded == sorted(set(sd) - skipped_keys)  # every other tensor of the checkpoint
    own = model.state_dict()
    for key in report.loaded:
        assert torch.equal(own[key], sd[key]), key
    assert own["layer3.1.bn3.running_var"].equal(sd["layer3.1.bn3.running_var"])  # inside an RSA block


def test_paper_init_keeps_msra_for_the_rsa_bottlenecks(r50_checkpoint):
    """Default (paper, Appendix A): the 7 RSA bottlenecks keep MSRA init with a zero last-BN gamma; the same
    8 modules are skipped, and every tensor outside the RSA blocks is loaded."""
    path, sd = r50_checkpoint
    model = default_model(pretrained=str(path))
    report = model.pretrained_report
    assert report.skipped == ["fc"] + DEFAULT_RSA_CONVS
    blocks = [n.rsplit(".", 1)[0] for n in DEFAULT_RSA_CONVS]
    in_blocks = {k for k in sd if any(k.startswith(b + ".") for b in blocks)}
    assert report.reinitialized == sorted({k.rsplit(".", 1)[0] for k in in_blocks} - set(DEFAULT_RSA_CONVS))
    assert report.loaded == sorted(set(sd) - in_blocks - {"fc.weight", "fc.bias"})
    own = model.state_dict()
    for key in report.loaded:
        assert torch.equal(own[key], sd[key]), key
    for b in blocks:
        assert torch.count_nonzero(own[f"{b}.bn3.weight"]) == 0  # zero-init residual: the block starts as identity
        assert not torch.equal(own[f"{b}.conv1.weight"], sd[f"{b}.conv1.weight"])
        assert torch.equal(own[f"{b}.bn1.running_var"], torch.ones_like(own[f"{b}.bn1.running_var"]))


def test_skipped_modules_keep_their_own_init(r50_checkpoint):
    path, sd = r50_checkpoint
    model = default_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, path, transform_block_init="pretrained")
    after = model.state_dict()
    for name in report.skipped:
        own_keys = [k for k in after if k.startswith(name + ".")]
        assert own_keys
        for k in own_keys:
            assert torch.equal(after[k], before[k]), k
    assert not torch.equal(after["layer3.1.conv1.weight"], before["layer3.1.conv1.weight"])


def test_wrapped_and_module_prefixed_checkpoints_are_accepted(r50_checkpoint, tmp_path):
    _, sd = r50_checkpoint
    for i, wrap in enumerate([lambda d: {"state_dict": d}, lambda d: {"model": d, "epoch": torch.tensor(3)}]):
        path = tmp_path / f"wrapped{i}.pth"
        torch.save(wrap({"module." + k: v for k, v in sd.items()}), path)
        model = default_model(transform="{type: conv2d}")
        report = load_pretrained(model, path)
        assert report.skipped == ["fc"]
        assert torch.equal(model.state_dict()["layer4.2.bn3.weight"], sd["layer4.2.bn3.weight"])


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "resnet50.pth"
    with pytest.raises(FileNotFoundError, match=str(path)):
        default_model(pretrained=str(path))


def test_checkpoint_of_another_depth_is_named(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(PretrainedMismatchError) as e:
        default_model(pretrained=str(path))
    msg = str(e.value)
    assert str(path) in msg and "looks like resnet18" in msg and "the model is resnet50" in msg
    assert "missing keys" in msg and "layer1.0.conv3.weight" in msg


def test_unexpected_missing_and_misshapen_keys_are_named(r50_checkpoint, tmp_path):
    _, sd = r50_checkpoint
    cases = {
        "unexpected": ({**sd, "layer2.0.extra.weight": torch.zeros(1)}, "unexpected keys (1): layer2.0.extra.weight"),
        "missing": ({k: v for k, v in sd.items() if k != "layer1.0.bn1.running_mean"},
                    "missing keys (1): layer1.0.bn1.running_mean"),
        "shape": ({**sd, "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)},
                  "layer1.0.conv1.weight (checkpoint (64, 64, 3, 3), model (64, 64, 1, 1))"),
    }
    for name, (state, expected) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(state, path)
        with pytest.raises(PretrainedMismatchError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            load_pretrained(default_model(), path)


def test_checkpoints_load_with_weights_only(r50_checkpoint, tmp_path):
    _, sd = r50_checkpoint
    path = tmp_path / "with_object.pth"
    torch.save({"state_dict": sd, "meta": NotATensor()}, path)
    with pytest.raises(PretrainedFileError, match="holds Python objects besides tensors") as e:
        load_pretrained(default_model(), path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)  # one line, no pickle traceback
