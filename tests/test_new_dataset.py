"""A new dataset is one module plus one line in the dataset table (rsanet.data.sets.DATASETS): a toy format,
written here as a file of its own, trains through tools/train.py with a config that names it."""
import importlib.util
import json

import numpy as np
import pytest
import torch
import yaml

from rsanet.config import ConfigError, load_config
from rsanet.data.sets import DATASETS
from rsanet.testing.media import write_frame_folder
from test_tools_support import load_tool

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


def load_module(path):
    spec = importlib.util.spec_from_file_location("toy_dataset", path)
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
        "data": {"dataset": "toy", "root": str(tmp_path / "clips"), "train_annotations": str(tmp_path / "train.txt"),
                 "val_annotations": None, "label_file": str(tmp_path / "classes.txt"), "resize": [32, 32],
                 "crop_size": 32, "scales": [1.0], "num_workers": 0, "pin_memory": False},
        "train": {"epochs": 1, "warmup_epochs": 0, "batch_size": 4},
        "runtime": {"device": "cpu", "progress": False, "tensorboard": False},
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
