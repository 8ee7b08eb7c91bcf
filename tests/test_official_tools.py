"""The authors' checkpoint format as a first-class input of the tools, end to end on tiny real trees:
tools/test.py on SS-V1 (JPEG frame folders + CSV) and SS-V2 (WebM + JSON), predict, visualize_kernels and
export on one file, and fine-tuning (model.init_from) from an SS-V2 checkpoint into a 48-class Diving-48 run.

The authors'-format files are written here from a random tiny model (ResNet-50 structure at width 8) with
our converter; that their format is theirs, and the conversion exact, is test_official_fixtures.py's job.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_tools_support import load_tool

from rsanet.config import load_config
from rsanet.data import build_dataset, normalize_clip
from rsanet.models import build_model
from rsanet.models.official import authors_checkpoint, native_to_authors
from rsanet.testing.media import textured_frames, write_frame_folder, write_video

ROOT = Path(__file__).resolve().parents[1]
SEGMENTS, SIZE = 4, 32
MODEL = {"arch": "resnet50", "width": 8, "num_classes": 174, "num_segments": SEGMENTS, "pretrained": None,
         "dropout": 0.3, "transform": {"rsa": {"kernel_size": [3, 3, 3], "queries": 2, "l2_eps": 1.0e-6}}}
SSV1 = {"301": 3, "302": 4, "303": 11}  # frame counts on both sides of T = 4
SSV2 = {"401": 5, "402": 9}


def names(dataset):
    return [n for n in (ROOT / "data" / dataset / "classes.txt").read_text().splitlines() if n]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("authors_tools")
    v1 = base / "ssv1"
    for i, (vid, n) in enumerate(SSV1.items()):
        write_frame_folder(v1 / "frames" / vid, textured_frames(n, 48, 64, seed=i), template="img_{:05d}.jpg")
    (v1 / "labels.csv").write_text((ROOT / "data" / "ssv1" / "classes_csv_order.txt").read_text())
    (v1 / "val.csv").write_text("".join(f"{vid};{names('ssv1')[7 * i]}\n" for i, vid in enumerate(SSV1)))
    v2 = base / "ssv2"
    for i, (vid, n) in enumerate(SSV2.items()):
        write_video(v2 / "videos" / f"{vid}.webm", textured_frames(n, 48, 64, seed=10 + i), "libvpx")
    (v2 / "labels.json").write_text(json.dumps({c: str(i) for i, c in enumerate(names("ssv2"))}))
    templates = [names("ssv2")[3], names("ssv2")[100]]
    (v2 / "val.json").write_text(json.dumps([{"id": v, "template": t} for v, t in zip(SSV2, templates)]))
    dv = base / "diving48"  # 48 classes
    for i, n in enumerate((6, 9)):
        write_frame_folder(dv / "root" / "rgb" / f"clip{i}", textured_frames(n, 48, 64, seed=20 + i))
    (dv / "vocab.json").write_text(json.dumps([n.split("+") for n in names("diving48")]))
    (dv / "train.json").write_text(json.dumps([{"vid_name": "clip0", "label": 3, "start_frame": 0, "end_frame": 6},
                                               {"vid_name": "clip1", "label": 47, "start_frame": 1, "end_frame": 9}]))
    # the model, and its authors'-format file
    cfg = load_config(tiny_cfg(base, "ssv1"))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():  # every tensor random, incl. the zero-init gammas and BN statistics
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.randn_like(t) * 0.3)
    ckpt = base / "resnet_rgb_model_best.pth.tar"
    torch.save(authors_checkpoint(native_to_authors(model.state_dict(), cfg.model), 50, 65.779), ckpt)
    return {"base": base, "model": model, "ckpt": ckpt}


def tiny_cfg(base, dataset, **extra):
    """The YAML config of the tiny model on one of the trees (written next to them)."""
    data = {"ssv1": {"dataset": "ssv1", "backend": "frames", "root": str(base / "ssv1" / "frames"),
                     "val_annotations": str(base / "ssv1" / "val.csv"),
                     "label_file": str(base / "ssv1" / "labels.csv"), "frame_template": "img_{:05d}.jpg"},
            "ssv2": {"dataset": "ssv2", "backend": "video", "root": str(base / "ssv2" / "videos"),
                     "val_annotations": str(base / "ssv2" / "val.json"),
                     "label_file": str(base / "ssv2" / "labels.json")},
            "diving48": {"dataset": "diving48", "backend": "frames", "root": str(base / "diving48" / "root"),
                         "train_annotations": str(base / "diving48" / "train.json"),
                         "val_annotations": str(base / "diving48" / "train.json"),
                         "label_file": str(base / "diving48" / "vocab.json"), "scales": [1.0]}}[dataset]
    data.update({"resize": [SIZE + 8, SIZE + 16], "crop_size": SIZE, "num_workers": 0, "pin_memory": False})
    doc = {"model": dict(MODEL, num_classes=48 if dataset == "diving48" else 174, **extra), "data": data,
           "train": {"epochs": 1, "warmup_epochs": 0.0, "batch_size": 2, "lr": 0.01}, "test": {"batch_size": 2},
           "runtime": {"device": "cpu", "progress": False, "tensorboard": False, "checkpoint_interval": 0}}
    path = base / f"{dataset}{'_' + '_'.join(extra) if extra else ''}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("dataset", ["ssv1", "ssv2"])
def test_tools_test_runs_an_authors_checkpoint_end_to_end(trees, dataset, tmp_path, capsys):
    """tools/test.py reads the .pth.tar directly: the log says converted, and scores.npz holds, per video, the
    logits and softmax of the original model on that video's test clip."""
    config = tiny_cfg(trees["base"], dataset)
    code = load_tool("test").main(["--config", str(config), "--checkpoint", str(trees["ckpt"]),
                                   "--work-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "authors' checkpoint (KimManjin/RSA format, epoch 50, arch ResNet, best_prec1 65.779) converted" in out
    cfg = load_config(config)
    dataset_ = build_dataset(cfg, "val")
    clips = normalize_clip(torch.stack([dataset_.load(i)[0] for i in range(dataset_.num_videos)]),
                           cfg.data.mean, cfg.data.std)
    with torch.no_grad():
        expected = trees["model"](clips)
    with np.load(tmp_path / "scores.npz") as z:
        assert z["video_ids"].tolist() == list(SSV1 if dataset == "ssv1" else SSV2)
        torch.testing.assert_close(torch.from_numpy(z["logits"]), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(z["scores"]), torch.softmax(expected, 1), rtol=1e-4, atol=1e-6)
    metrics = json.loads((tmp_path / "test_metrics.json").read_text())
    assert metrics["num_videos"] == dataset_.num_videos and metrics["views"] == 1


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_predict_visualize_and_export_read_an_authors_checkpoint(trees, tmp_path, capsys):
    config = str(tiny_cfg(trees["base"], "ssv1"))
    ckpt, video = str(trees["ckpt"]), str(trees["base"] / "ssv1" / "frames" / "303")
    assert load_tool("predict").main(["--config", config, "--checkpoint", ckpt, video, "--topk", "3"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(video) and len(out.strip().splitlines()) == 4 and "converted" in err
    viz = tmp_path / "viz"
    assert load_tool("visualize_kernels").main(["--config", config, "--checkpoint", ckpt, "--video", video,
                                                "--out", str(viz), "--cell", "16", "--device", "cpu"]) == 0
    assert sorted(p.suffix for p in viz.iterdir()) == [".npz", ".png", ".png"]
    assert "converted" in capsys.readouterr().err
    exported = tmp_path / "model.pt"
    assert load_tool("export").main(["--config", config, "--checkpoint", ckpt, "--format", "torchscript",
                                     "--out", str(exported)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(ok, atol 0.0001)") == 2
    x = torch.randn(2, 3, SEGMENTS, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(exported))(x), trees["model"](x), rtol=0, atol=1e-4)
    # without a config: the file stores none (nor T), and the message says what to pass
    assert load_tool("predict").main(["--checkpoint", ckpt, video]) == 1
    assert "stores no config" in capsys.readouterr().err


def test_tools_test_class_count_mismatch_names_file_and_key(trees, tmp_path, capsys):
    """Their SS-V1 checkpoint (174 classes) against a Diving-48 config (48 classes)."""
    config = tiny_cfg(trees["base"], "diving48")
    code = load_tool("test").main(["--config", str(config), "--checkpoint", str(trees["ckpt"]), "--work-dir",
                                   str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert str(trees["ckpt"]) in err and "model.num_classes is 48, the checkpoint has 174" in err


def test_fine_tuning_from_an_authors_ssv2_checkpoint_into_48_classes(trees, tmp_path):
    """model.init_from with a 174-class authors' checkpoint in a Diving-48 (48 classes) run: every tensor but
    the classifier is loaded, the log says so, and training starts at epoch 0 with a fresh schedule."""
    from rsanet.engine import run_training

    config = tiny_cfg(trees["base"], "diving48", init_from=str(trees["ckpt"]))
    summary = run_training(load_config(config), tmp_path / "work")
    assert summary["finished"] and summary["epoch"] == 1 and summary["global_step"] == 1  # from epoch 0, step 0
    log = (tmp_path / "work" / "train.log").read_text()
    total = len(trees["model"].state_dict())
    assert (f"model.init_from: loaded {total - 2} tensors from {trees['ckpt']} (authors' format); "
            "re-initialized fc.weight, fc.bias (the checkpoint's classifier has 174 classes, model.num_classes is 48)"
            in log), log
    assert "converted to RSANet's layout" in log
