"""Checkpoints of the earlier layout (format 1: ``world_size`` at the top, and a stored config with the derived
keys runtime.world_size / train.total_batch / train.scaled_lr and the flat synthetic keys data.train_size ...)
keep working: tools read their config, training resumes from them, and the derived keys are neither errors nor
reported as changes."""
import copy

import pytest
import torch
from test_tools_support import load_tool

from rsanet.config import config_to_dict, load_config
from rsanet.engine import run_training
from rsanet.engine.checkpoint import load_checkpoint
from rsanet.engine.weights import read_model_weights
from rsanet.inference import resolve_config

TINY = ["model.arch=resnet18", "model.width=8", "model.num_segments=4", "model.pretrained=null",
        "model.num_classes=2", "model.transform.positions=[[1],[],[],[]]", "model.transform.rsa.kernel_size=[3,3,3]",
        "model.transform.rsa.queries=2", "data.dataset=synthetic", "data.synthetic.classes=2",
        "data.synthetic.frames=4",
        "data.synthetic.resolution=[32,32]", "data.synthetic.train_size=8", "data.synthetic.val_size=4",
        "data.synthetic.seed=3", "data.resize=[32,32]", "data.crop_size=32", "data.num_workers=0",
        "train.batch_size=4", "train.epochs=2", "train.warmup_epochs=0", "test.batch_size=4",
        "runtime.log_interval=1", "runtime.tensorboard=false", "runtime.progress=false",
        "runtime.checkpoint_interval=0", "runtime.device=cpu"]


def as_format_1(ckpt: dict) -> dict:
    """The same checkpoint in the layout of format 1 (what older RSANet versions wrote)."""
    old = copy.deepcopy(ckpt)
    run = old.pop("run_state")
    old["format"], old["world_size"] = 1, run["world_size"]
    cfg = old["config"]
    synthetic = cfg["data"].pop("synthetic")
    cfg["data"].update(train_size=synthetic["train_size"], val_size=synthetic["val_size"],
                       synthetic_frames=synthetic["frames"], synthetic_resolution=synthetic["resolution"],
                       synthetic_classes=synthetic["classes"], synthetic_seed=synthetic["seed"])
    cfg["train"].update(total_batch=run["total_batch"], scaled_lr=run["scaled_lr"])
    cfg["runtime"]["world_size"] = run["world_size"]
    return old


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A one-epoch run whose last.pth is rewritten in the format-1 layout."""
    folder = tmp_path_factory.mktemp("old")
    cfg = load_config(None, TINY + ["train.epochs=1"])
    run_training(cfg, folder / "w")
    path = folder / "w" / "last.pth"
    new = torch.load(path, weights_only=True)
    torch.save(as_format_1(new), path)
    return cfg, new, path


def test_an_old_checkpoint_loads_with_today_s_config_keys(old_run):
    cfg, new, path = old_run
    old = torch.load(path, weights_only=True)
    assert old["config"]["data"]["synthetic_frames"] == 4 and "scaled_lr" in old["config"]["train"]
    assert load_checkpoint(path)["config"] == new["config"]  # updated on load: the stored config of today
    assert read_model_weights(path).config == new["config"]
    stored = resolve_config(None, path, ["test.batch_size=2"])  # what predict / export / visualize use
    assert stored.data.synthetic.seed == 3 and stored.data.synthetic.frames == 4 and stored.test.batch_size == 2
    expected = config_to_dict(cfg)
    expected["test"]["batch_size"] = 2
    expected["runtime"]["work_dir"] = stored.runtime.work_dir
    assert config_to_dict(stored) == expected


def test_tools_test_reads_the_old_checkpoint_s_config(old_run, tmp_path):
    _, _, path = old_run
    assert load_tool("test").main(["--checkpoint", str(path), "--work-dir", str(tmp_path)]) == 0
    assert (tmp_path / "test_metrics.json").is_file()


def test_training_resumes_from_an_old_checkpoint_without_reporting_derived_keys(old_run, tmp_path):
    cfg, _, path = old_run
    work = tmp_path / "w"
    work.mkdir()
    (work / "last.pth").write_bytes(path.read_bytes())
    out = run_training(load_config(None, TINY), work, resume="auto")  # train.epochs: 1 -> 2
    assert out["finished"] and out["epoch"] == 2
    log = (work / "train.log").read_text()
    assert "this config applies: train.epochs: 1 -> 2" in log
    assert "scaled_lr" not in log and "world_size" not in log and "synthetic_frames" not in log
    assert torch.load(work / "last.pth", weights_only=True)["format"] == 2
