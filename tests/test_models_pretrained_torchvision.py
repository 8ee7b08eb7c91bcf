"""``model.pretrained: torchvision`` (IMAGENET1K_V1 through the torch hub cache) and clear one-line errors for
unusable ImageNet inputs: a text file, a pickle, an empty offline cache, a model of another width.

Nothing here downloads: ``TORCH_HOME`` points into a temporary folder, and ``torch.hub.download_url_to_file``
(or the ``urlopen`` under it) is replaced, so that the network is never touched.
"""
import pickle
import urllib.error
from email.message import Message

import pytest
import torch
import torchvision
import yaml
from test_tools_support import load_tool, tiny_config

from rsanet.config import load_config
from rsanet.models import PretrainedMismatchError, build_model
from rsanet.models.pretrained import (
    PretrainedFileError,
    PretrainedUnavailableError,
    check_pretrained,
    torchvision_weights,
)

R18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"  # torchvision's ResNet18 IMAGENET1K_V1


def r18_options(*extra):
    """A ResNet-18 RSANet (width 64, the standard ResNet) small enough for the CPU."""
    return ["model.arch=resnet18", "model.num_classes=5", "model.transform.positions=[[1],[1],[],[]]",
            "model.transform.rsa.kernel_size=[3,3,3]", "model.transform.rsa.queries=2", *extra]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path, and no network: any download attempt is recorded and fails."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix, progress))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    return cache, calls


def random_r18_state(seed=0):
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


def test_the_cache_file_is_torch_hubs(hub):
    cache, _ = hub
    url, dst = torchvision_weights("resnet18")
    assert url == R18_URL and dst == cache / "resnet18-f37072fd.pth"
    assert torchvision_weights("resnet50")[1].name == "resnet50-0676ba61.pth"


def test_prefilled_cache_works_offline(hub):
    cache, calls = hub
    cache.mkdir(parents=True)
    state = random_r18_state()
    torch.save(state, cache / "resnet18-f37072fd.pth")  # as torch.hub leaves it (no hash check once cached)
    cfg = load_config(None, r18_options("model.pretrained=torchvision"))
    check_pretrained(cfg.model)  # the runner's early check
    model = build_model(cfg)
    report = model.pretrained_report
    assert report.path == str(cache / "resnet18-f37072fd.pth") and report.skipped[0] == "fc"
    own = model.state_dict()
    assert report.loaded and all(torch.equal(own[k], state[k]) for k in report.loaded)
    assert "layer3.0.conv1.weight" in report.loaded and calls == []  # nothing was downloaded


def test_empty_cache_offline_says_which_file_goes_where(hub):
    cache, calls = hub
    cfg = load_config(None, r18_options("model.pretrained=torchvision"))
    for attempt in (lambda: check_pretrained(cfg.model), lambda: build_model(cfg)):
        with pytest.raises(PretrainedUnavailableError) as e:
            attempt()
        msg = str(e.value)
        assert f"put {R18_URL} at {cache / 'resnet18-f37072fd.pth'}" in msg and "\n" not in msg
        assert "Temporary failure in name resolution" in msg and isinstance(e.value, FileNotFoundError)
    assert [c[0] for c in calls] == [R18_URL, R18_URL]


def test_download_goes_once_into_the_cache_with_hash_check_and_progress(hub, monkeypatch):
    cache, _ = hub
    calls, state = [], random_r18_state(1)

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix, progress))
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    cfg = load_config(None, r18_options("model.pretrained=torchvision"))
    for _ in range(2):
        model = build_model(cfg)
        assert torch.equal(model.state_dict()["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    assert calls == [(R18_URL, str(cache / "resnet18-f37072fd.pth"), "f37072fd", True)]  # once, checked


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(tmp_path, monkeypatch):
    """torch.hub's own download and hash check run on a fake HTTP response that is not the weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    body = b"<html>a proxy login page</html>"

    class Response:
        def __init__(self):
            self.chunks = [body, b""]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def info(self):
            meta = Message()
            meta["Content-Length"] = str(len(body))
            return meta

        def read(self, n):
            return self.chunks.pop(0)

    monkeypatch.setattr(torch.hub, "urlopen", lambda req, *a, **k: Response())  # the real download, no network
    cfg = load_config(None, r18_options("model.pretrained=torchvision"))
    with pytest.raises(PretrainedUnavailableError, match="invalid hash value"):
        check_pretrained(cfg.model)
    assert not (cache / "resnet18-f37072fd.pth").exists() and not list(cache.glob("*.partial"))


def test_text_and_pickle_files_give_one_line_errors(tmp_path):
    text = tmp_path / "weights.txt"
    text.write_text("epoch 1 top1 76.1\n")
    pick = tmp_path / "weights.pkl"
    pick.write_bytes(pickle.dumps({"conv1.weight": [[1.0, 2.0]]}))
    for path in (text, pick):
        cfg = load_config(None, r18_options(f"model.pretrained={path}"))
        for attempt in (lambda: check_pretrained(cfg.model), lambda: build_model(cfg)):
            with pytest.raises(PretrainedFileError) as e:
                attempt()
            msg = str(e.value)
            assert msg.startswith(f"{path}: not a PyTorch checkpoint") and "\n" not in msg
            assert "model.pretrained must be a torchvision ResNet state dict" in msg


def test_imagenet_weights_on_a_narrow_model_give_the_width_hint(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(random_r18_state(), path)
    cfg = load_config(None, r18_options(f"model.pretrained={path}", "model.width=8"))
    for attempt in (lambda: check_pretrained(cfg.model), lambda: build_model(cfg)):
        with pytest.raises(PretrainedMismatchError) as e:
            attempt()
        msg = str(e.value)
        assert "width 64" in msg and "model.width=8" in msg and "set model.width=64" in msg
        assert "\n" not in msg and "shape mismatches" not in msg
    tv = load_config(None, r18_options("model.pretrained=torchvision", "model.width=8"))
    with pytest.raises(PretrainedMismatchError, match="set model.width=64"):
        check_pretrained(tv.model)  # before any download


def run_train_tool(tmp_path, capsys, model_overrides):
    cfg = tiny_config("rsa")
    cfg["model"].update(model_overrides)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = load_tool("train").main(["--config", str(path), "--work-dir", str(tmp_path / "work")])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.mark.parametrize("case", ["text", "pickle", "width", "offline"])
def test_train_tool_prints_one_line(case, tmp_path, capsys, hub):
    cache, _ = hub
    bad = tmp_path / "bad.pth"
    if case == "text":
        bad.write_text("not weights")
        over, expect = {"pretrained": str(bad)}, "not a PyTorch checkpoint"
    elif case == "pickle":
        bad.write_bytes(pickle.dumps([1, 2, 3]))
        over, expect = {"pretrained": str(bad)}, "not a PyTorch checkpoint"
    elif case == "width":
        over, expect = {"pretrained": "torchvision"}, "set model.width=64"  # tiny_config has width 8
    else:
        over, expect = {"pretrained": "torchvision", "width": 64}, f"at {cache / 'resnet18-f37072fd.pth'}"
    rc, err = run_train_tool(tmp_path, capsys, over)
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err
    assert not (tmp_path / "work" / "last.pth").exists()
