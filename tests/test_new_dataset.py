"""A new dataset, transform or backbone is one module plus one line in its table (rsanet.data.sets.DATASETS,
rsanet.ops.TRANSFORMS, rsanet.backbones.BACKBONES): toy ones, written here as files of their own, train through
tools/train.py with a config that names them."""
import importlib.util
import json

import numpy as np
import pytest
import torch
import yaml
from test_tools_support import load_tool

from rsanet.config import ConfigError, load_config
from rsanet.data.sets import DATASETS
from rsanet.testing.media import write_frame_folder

# The whole dataset: its annotation format ("<id>|<class name>" lines), label file (one name per line), where
# its samples live and what the config leaves to its files; every member of the protocol in rsanet/data/sets.
TOY_MODULE = '''
"""Toy clips: "<id>|<class name>" annotation lines, a one-name-per-line label file, frame folders <id>/."""
from rsanet.data.labels import AnnotationError, read_class_list
from rsanet.data.records import VideoRecord
from rsanet.data.sets import common
from rsanet.data.sets.common import check, decoder, has_split, open_video  # noqa: F401

VIDEO_EXT = "mp4"
DROP_MISSING = False


def defaults(data):
    return 0, "frames"  # the class count is the label file's (resolve)


def read_classes(label_file):
    return read_class_list(common.open_file(label_file))


def read_records(annotation_file, classes, backend="frames", ext=VIDEO_EXT):
    path = common.open_file(annotation_file)
    records = []
    for n, line in common.text_lines(path):
        vid, _, name = line.partition("|")
        if name not in classes:
            raise AnnotationError(f"{path}:{n}: unknown class {name!r}")
        records.append(VideoRecord(common.media_path(vid, backend, ext), 0, classes.index(name), video_id=vid))
    return records


def class_names(cfg):
    return common.official_class_names(cfg, read_classes)


def records(cfg, split, classes):
    return common.official_records(cfg, split, classes, read_records, VIDEO_EXT)


def resolve(cfg, splits):
    if cfg.model.num_classes:
        return []
    cfg.model.num_classes = len(class_names(cfg))
    return [("info", f"model.num_classes={cfg.model.num_classes} from {cfg.data.label_file}")]
'''


def toy_run(tmp_path):
    """The data, train and runtime sections of a one-step run on the toy dataset written under ``tmp_path``."""
    return {
        "data": {"dataset": "toy", "root": str(tmp_path / "clips"), "train_annotations": str(tmp_path / "train.txt"),
                 "val_annotations": None, "label_file": str(tmp_path / "classes.txt"), "resize": [32, 32],
                 "crop_size": 32, "scales": [1.0], "num_workers": 0, "pin_memory": False},
        "train": {"epochs": 1, "warmup_epochs": 0, "batch_size": 4},
        "runtime": {"device": "cpu", "progress": False, "tensorboard": False},
    }


def load_module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_toy_dataset_in_one_file_trains_one_step_through_the_train_tool(tmp_path, monkeypatch):
    (tmp_path / "toy_dataset.py").write_text(TOY_MODULE)
    monkeypatch.setitem(DATASETS, "toy", load_module(tmp_path / "toy_dataset.py"))  # the one table entry
    rng = np.random.default_rng(0)
    names = ["left", "right", "still"]
    for i in range(4):
        write_frame_folder(tmp_path / "clips" / f"c{i}", rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    (tmp_path / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    (tmp_path / "train.txt").write_text("".join(f"c{i}|{names[i % 3]}\n" for i in range(4)))
    config = {
        "model": {"arch": "resnet18", "width": 8, "num_segments": 4, "pretrained": None,
                  "transform": {"type": "conv2d"}},
        **toy_run(tmp_path),
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_config(path).data.dataset == "toy"  # the config's names come from the table
    work = tmp_path / "work"
    assert load_tool("train").main(["--config", str(path), "--work-dir", str(work)]) == 0
    ckpt = torch.load(work / "last.pth", weights_only=True)
    assert ckpt["global_step"] == 1 and ckpt["model"]["fc.weight"].shape == (3, 64)  # three classes, from the file
    saved = yaml.safe_load((work / "config.yaml").read_text())
    assert saved["data"]["dataset"] == "toy" and saved["model"]["num_classes"] == 3
    assert json.loads((work / "run_state.json").read_text())["total_batch"] == 4
    monkeypatch.delitem(DATASETS, "toy")
    with pytest.raises(ConfigError, match="`data.dataset` is 'toy', expected one of ssv1"):
        load_config(path)  # out of the table, the name is refused


# A transform: its options (one key, checked), and a layer that convolves the difference of each frame and the
# one `shift` frames before it (a temporal transform: it sees the clip (B, C, T, H, W)).
TOY_TRANSFORM = '''
"""Toy transform: a 3x3 conv of the difference between each frame and the frame `shift` steps before it."""
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Options:
    shift: int = 1  # frames between the two frames of a difference


def check(options, key):
    return f"`{key}.shift` must be at least 1, got {options.shift}" if options.shift < 1 else None


class FrameDifference(nn.Module):
    def __init__(self, in_channels, out_channels, stride, shift):
        super().__init__()
        self.shift = shift
        self.conv = nn.Conv3d(in_channels, out_channels, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
                              bias=False)

    def forward(self, x):  # (B, C, T, H, W) -> (B, C_out, T, H/s, W/s)
        before = torch.cat([x[:, :, :1].expand(-1, -1, self.shift, -1, -1), x[:, :, :-self.shift]], dim=2)
        return self.conv(x - before)


def build(options, in_channels, out_channels, stride=1):
    return FrameDifference(in_channels, out_channels, stride, options.shift)
'''

# A backbone: a stem and two 3x3 convs, either of which can hold a transform (named with model.transform.replace).
TOY_BACKBONE = '''
"""Toy backbone: a strided stem, two 3x3 convs and a BatchNorm, pooled per frame."""
import torch
from torch import nn

from rsanet.backbones.common import run_slot

DEPTHS = []  # no positions shorthand: model.transform.replace names the convs
WEIGHTS = None  # no torchvision weights


def slot(stage, block):
    raise ValueError("the toy backbone has no stages")


def slots(net):
    return ["body.0", "body.1"]


def check(mcfg):
    if mcfg.stochastic_depth:
        return "`model.stochastic_depth` must be 0: the toy backbone has no residual branch"
    return None


def build(mcfg):
    net = nn.Module()
    net.stem = nn.Conv2d(3, mcfg.width, 3, stride=2, padding=1, bias=False)
    net.body = nn.ModuleList([nn.Conv2d(mcfg.width, mcfg.width, 3, padding=1, bias=False) for _ in range(2)])
    net.bn = nn.BatchNorm2d(mcfg.width)
    net.num_features = mcfg.width
    return net


def features(net, x, t):  # (B*T, 3, H, W) -> (B*T, C)
    x = torch.relu(net.stem(x))
    for conv in net.body:
        x = torch.relu(run_slot(net, conv, x, t))
    return net.bn(x).mean(dim=(2, 3))


def residual_bns(net):
    return []
'''


def test_a_toy_transform_and_backbone_in_one_file_each_train_through_the_train_tool(tmp_path, monkeypatch):
    from rsanet.backbones import BACKBONES
    from rsanet.models import build_model
    from rsanet.ops import TRANSFORMS

    for name, text in (("toy_dataset", TOY_MODULE), ("frame_difference", TOY_TRANSFORM), ("toy_net", TOY_BACKBONE)):
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.setitem(DATASETS, "toy", load_module(tmp_path / "toy_dataset.py"))  # one table entry each
    monkeypatch.setitem(TRANSFORMS, "frame_difference", load_module(tmp_path / "frame_difference.py"))
    monkeypatch.setitem(BACKBONES, "toy_net", load_module(tmp_path / "toy_net.py"))
    rng = np.random.default_rng(1)
    names = ["left", "right"]
    for i in range(4):
        write_frame_folder(tmp_path / "clips" / f"c{i}", rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    (tmp_path / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    (tmp_path / "train.txt").write_text("".join(f"c{i}|{names[i % 2]}\n" for i in range(4)))
    config = {
        "model": {"arch": "toy_net", "width": 8, "num_segments": 4, "num_classes": 2, "pretrained": None,
                  "stochastic_depth": 0.0,
                  "transform": {"type": "frame_difference", "replace": ["body.1"], "frame_difference": {"shift": 2}}},
        **toy_run(tmp_path),
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = load_config(path)  # the config's names and the transform's section come from the tables
    assert (cfg.model.arch, cfg.model.transform.type, cfg.model.transform.frame_difference.shift) == \
        ("toy_net", "frame_difference", 2)
    model = build_model(cfg)
    assert model.replaced == ["body.1"] and type(model.body[1]).__name__ == "FrameDifference"
    x = torch.randn(2, 3, 4, 32, 32)
    model.eval()
    with torch.no_grad():  # the transform sees clips: time order matters, clips do not mix
        assert not torch.allclose(model(x), model(x.flip(2)))
        torch.testing.assert_close(model(x), torch.cat([model(x[:1]), model(x[1:])]))
    work = tmp_path / "work"
    assert load_tool("train").main(["--config", str(path), "--work-dir", str(work)]) == 0
    ckpt = torch.load(work / "last.pth", weights_only=True)
    assert ckpt["global_step"] == 1 and ckpt["model"]["body.1.conv.weight"].shape == (8, 8, 1, 3, 3)
    assert ckpt["model"]["fc.weight"].shape == (2, 8)
    saved = yaml.safe_load((work / "config.yaml").read_text())["model"]
    assert saved["transform"]["frame_difference"] == {"shift": 2} and saved["arch"] == "toy_net"
    with pytest.raises(ConfigError, match=r"`model.transform.frame_difference.shift` must be at least 1"):
        load_config(path, ["model.transform.frame_difference.shift=0"])
    with pytest.raises(ConfigError, match=r"`model.stochastic_depth` must be 0: the toy backbone"):
        load_config(path, ["model.stochastic_depth=0.1"])
    with pytest.raises(ValueError, match=r"model.transform.replace: 'stem' is not a conv of toy_net"):
        build_model(load_config(path, ["model.transform.replace=[stem]"]))
    monkeypatch.delitem(TRANSFORMS, "frame_difference")
    with pytest.raises(ConfigError, match="unknown key `model.transform.frame_difference`"):
        load_config(path)  # out of the table, its section is unknown too
