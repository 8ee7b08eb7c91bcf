"""A new user's path and the outputs they expect: the README's "Train on your own videos" quick start run
command by command on real MP4 files, backend detection, tools/test.py without --config and its per-class
report / confusion matrix / TensorBoard scalars, training curves, frame extraction without ffmpeg, and the
small things a user notices (progress bar, stray decoder messages, plurals, example paths, documented files)."""
import io
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_tools_support import load_tool, train_tiny

from rsanet.config import load_config
from rsanet.testing.media import textured_frames, write_frame_folder, write_video

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

TINY_OPTS = ["model.arch=resnet18", "model.width=8", "model.num_segments=4", "model.pretrained=null",
             "model.transform.positions=[[1],[],[],[]]", "model.transform.rsa.kernel_size=[3,3,3]",
             "model.transform.rsa.queries=2", "data.resize=[32,32]", "data.crop_size=32", "data.num_workers=0",
             "train.batch_size=2", "test.batch_size=4", "train.epochs=1", "train.warmup_epochs=0",
             "runtime.tensorboard=false", "runtime.progress=false", "runtime.device=cpu"]


def readme_section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.index("\n## ", start + 1)
    return README[start:end]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def write_class_folders(root: Path, classes=("open", "close", "wave"), clips=5) -> None:
    for c, name in enumerate(classes):
        for i in range(clips):
            write_video(root / name / f"clip {i}.mp4", textured_frames(8, 32, 32, seed=10 * c + i))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------- 9. the README quick start
def test_readme_quick_start_on_real_videos(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    write_class_folders(tmp_path / "videos")
    section = readme_section("Train on your own videos")
    (tmp_path / "my_videos.yaml").write_text(code_blocks(section, "yaml")[0])
    commands = [shlex.split(line.split("  #")[0]) for line in code_blocks(section, "bash")[0].splitlines()
                if line.startswith("python tools/")]
    assert [c[1] for c in commands] == ["tools/make_list.py", "tools/check_dataset.py", "tools/train.py",
                                        "tools/test.py", "tools/predict.py"]
    write_video(tmp_path / "new_clip.mp4", textured_frames(8, 32, 32, seed=99))
    for command in commands:
        tool, args = Path(command[1]).stem, command[2:]
        if tool in ("train", "check_dataset"):
            args += ["--opts", *TINY_OPTS]
        code = load_tool(tool).main(args)
        out = capsys.readouterr()
        assert code == 0, (command, out.err)
        if tool == "make_list":
            assert (tmp_path / "lists" / "classes.txt").read_text().splitlines() == ["close", "open", "wave"]
            train = (tmp_path / "lists" / "train.txt").read_text().splitlines()
            assert train[0] == "close/clip 0.mp4 0" and len(train) == 12  # `<path> <label>`, spaces kept
            assert (tmp_path / "lists" / "val.txt").read_text().splitlines() == [
                "close/clip 4.mp4 0", "open/clip 4.mp4 1", "wave/clip 4.mp4 2"]
        if tool == "check_dataset":
            assert "checked 12 videos: 12 readable, 0 unreadable" in out.out
    w = tmp_path / "work_dirs" / "my_videos"
    stored = torch.load(w / "best.pth", weights_only=True)["config"]
    assert stored["model"]["num_classes"] == 3 and stored["data"]["backend"] == "video"
    log = (w / "train.log").read_text()
    assert "data.backend=video: the entries of lists/train.txt are video files" in log
    assert "training curves" in log  # drawn, or the line saying what to install
    metrics = json.loads((w / "test_metrics.json").read_text())
    assert metrics["num_videos"] == 3 and metrics["split"] == "val"
    assert (w / "per_class.json").is_file() and (w / "confusion_matrix.png").is_file()
    assert re.search(r"new_clip\.mp4 \(1 view\)\n  1\. \d\.\d{4}  (open|close|wave)", out.out)


def test_backend_set_against_the_entries_fails_at_start_up_with_the_fix(tmp_path, monkeypatch):
    from rsanet.engine import run_training, runner
    write_class_folders(tmp_path / "videos", clips=2)
    lst = tmp_path / "train.txt"
    lst.write_text("open/clip 0.mp4 8 1\nclose/clip 0.mp4 8 0\nopen/clip 1.mp4 8 1\nclose/clip 1.mp4 8 0\n")
    monkeypatch.setattr(runner, "init_distributed", lambda *a, **k: pytest.fail("must fail before the process group"))
    cfg = load_config(None, TINY_OPTS + ["data.dataset=list", f"data.root={tmp_path / 'videos'}",
                                         f"data.train_annotations={lst}", f"data.val_annotations={lst}",
                                         "model.num_classes=2", "data.backend=frames"])
    with pytest.raises(ValueError, match=r"data.backend is 'frames', but the entries of .*train.txt are video files "
                                         r"\(e.g. open/clip 0.mp4\): set data.backend=video \(or auto\)"):
        run_training(cfg, tmp_path / "w")
    folders = tmp_path / "frames"
    write_frame_folder(folders / "a", textured_frames(6, 32, 32))
    (tmp_path / "f.txt").write_text("a 6 0\na 6 1\n")
    cfg = load_config(None, TINY_OPTS + ["data.dataset=list", f"data.root={folders}", "data.backend=video",
                                         f"data.train_annotations={tmp_path / 'f.txt'}", "model.num_classes=2"])
    with pytest.raises(ValueError, match=r"entries of .*f.txt are frame folders \(e.g. a\): set data.backend=frames"):
        run_training(cfg, tmp_path / "w2")


# ------------------------------------------------------------- 12. test.py without --config, 16. its report
def test_test_tool_without_config_writes_per_class_report_matrix_and_tensorboard(tmp_path, capsys, one_thread):
    config, best = train_tiny(tmp_path)
    with_config = tmp_path / "with_config"
    assert load_tool("test").main(["--config", str(config), "--checkpoint", str(best), "--work-dir",
                                   str(with_config)]) == 0
    capsys.readouterr()
    w = best.parent
    code = load_tool("test").main(["--checkpoint", str(best), "--opts", "runtime.tensorboard=true"])
    stdout = capsys.readouterr().out
    printed = json.loads(stdout[stdout.index("\n{") + 1:])  # after the log line, the metrics as JSON
    assert code == 0
    metrics = json.loads((w / "test_metrics.json").read_text())
    reference = json.loads((with_config / "test_metrics.json").read_text())
    assert printed["top1"] == metrics["top1"] == reference["top1"] and metrics["num_videos"] == 4
    assert "(1 clip x 1 crop)" in (w / "test.log").read_text() and "x 1 view)" in (w / "test.log").read_text()

    scores = np.load(w / "scores.npz")
    pred, labels = scores["scores"].argmax(1), scores["labels"]
    report = json.loads((w / "per_class.json").read_text())
    for row in report["classes"]:  # independent of per_class_report: straight from scores.npz
        mine = labels == row["index"]
        assert row["support"] == int(mine.sum()) and row["correct"] == int((pred[mine] == row["index"]).sum())
        if mine.any():
            assert row["accuracy"] == pytest.approx(100.0 * (pred[mine] == row["index"]).mean())
    pairs = {(int(t), int(p)) for t, p in zip(labels, pred) if t != p}
    assert {(c["true"], c["predicted"]) for c in report["most_confused"]} == pairs
    assert Image.open(w / "confusion_matrix.png").format == "PNG"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(w / "tensorboard"))
    events.Reload()
    (top1,) = events.Scalars("test/top1")
    assert top1.value == pytest.approx(metrics["top1"])
    assert top1.step == torch.load(best, weights_only=True)["global_step"]


def test_confusion_matrix_png_shows_each_rows_shares():
    from rsanet.plots import CONFUSION_HIGH, CONFUSION_LOW, draw_confusion_matrix
    cm = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    path = Path(pytest.importorskip("tempfile").mkdtemp()) / "cm.png"
    layout = draw_confusion_matrix(cm, path, ["a", "b", "c"])
    image = np.asarray(Image.open(path).convert("RGB")).astype(float)
    x0, y0, cell = layout["x0"], layout["y0"], layout["cell"]
    low, high = np.array(CONFUSION_LOW, float), np.array(CONFUSION_HIGH, float)
    for i in range(3):
        for j in range(3):
            pixel = image[y0 + i * cell + cell // 2, x0 + j * cell + cell // 2]
            share = ((pixel - low) / (high - low)).mean()
            expected = cm[i, j] / cm[i].sum() if cm[i].sum() else 0.0
            assert share == pytest.approx(expected, abs=0.01), (i, j)


# ------------------------------------------------------------------------------------ 17. training curves
def test_curve_positions_are_epochs_and_a_resumed_step_counts_once(tmp_path):
    from rsanet.plots import curve_series, read_metrics
    rows = [{"kind": "train", "step": s, "epoch": (s - 1) // 4 + 1, "loss": 1.0 / s, "lr": 0.1} for s in range(1, 9)]
    rows.insert(4, {"kind": "train", "step": 5, "epoch": 2, "loss": 99.0, "lr": 0.1})  # logged, then resumed before
    rows += [{"kind": "val", "step": 4, "epoch": 1, "top1": 50.0, "top5": 90.0},
             {"kind": "val", "step": 8, "epoch": 2, "top1": "nan", "top5": 95.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "tr')
    series = curve_series(read_metrics(tmp_path / "metrics.jsonl"))
    np.testing.assert_allclose(series["loss"][0], [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    assert series["loss"][1][4] == 1.0 / 5  # step 5 as logged again after the resume
    np.testing.assert_allclose(series["top5"][0], [1.0, 2.0])
    assert np.isnan(series["top1"][1][1]) and series["top1"][1][0] == 50.0


def test_plot_tool_says_what_to_install_without_matplotlib(tmp_path, monkeypatch, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "epoch": 1, "loss": 1.0,
                                                        "lr": 0.1}) + "\n")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    assert load_tool("plot_curves").main([str(tmp_path)]) == 2
    assert "drawing training curves needs matplotlib: `pip install matplotlib`" in capsys.readouterr().err
    assert not (tmp_path / "curves.png").exists()


def test_plot_tool_draws_the_curves(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rows = [{"kind": "train", "step": s, "epoch": (s - 1) // 2 + 1, "loss": 2.0 / s, "lr": 0.1 * s}
            for s in range(1, 7)]
    rows += [{"kind": "val", "step": 2 * e, "epoch": e, "top1": 10.0 * e, "top5": 20.0 * e} for e in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_tool("plot_curves").main([str(tmp_path)]) == 0
    image = Image.open(tmp_path / "curves.png")
    assert image.format == "PNG" and image.size == (1200, 360)
    assert np.asarray(image.convert("L")).std() > 5  # something was drawn


# --------------------------------------------------------------------- 14. frame extraction without ffmpeg
@pytest.mark.parametrize("library", ["av", "decord"])
def test_prepare_frames_falls_back_to_python_decoding(tmp_path, monkeypatch, capsys, library):
    import rsanet.prep.jobs as prepare
    from rsanet.data.decoders import FrameFolderDecoder, VideoFileDecoder
    from rsanet.data.records import VideoRecord
    write_video(tmp_path / "videos" / "a.mp4", textured_frames(7, 48, 64, seed=1))
    write_video(tmp_path / "videos" / "sub" / "b.mp4", textured_frames(5, 48, 64, seed=2))
    monkeypatch.setattr(prepare.shutil, "which", lambda name: None)  # no ffmpeg binary on PATH
    if library == "decord":
        monkeypatch.setitem(sys.modules, "av", None)
    code = load_tool("prepare_frames").main(["--videos", str(tmp_path / "videos"), "--frames", str(tmp_path / "f"),
                                             "--height", "24", "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 0 and f"extracting with {'PyAV' if library == 'av' else 'decord'}" in out
    frames = FrameFolderDecoder(tmp_path / "f")
    video = VideoFileDecoder(tmp_path / "videos")
    for name, count in [("a", 7), ("sub/b", 5)]:
        assert frames.count_frames(tmp_path / "f" / name) == count
        got = frames.decode(VideoRecord(name, count), list(range(count)))  # (T, 24, 32, 3)
        want = video.decode(VideoRecord(f"{name}.mp4", count), list(range(count)))  # (T, 48, 64, 3)
        assert got.shape == (count, 24, 32, 3)
        half = want.reshape(count, 24, 2, 32, 2, 3).mean(axis=(2, 4))  # 2 x 2 means ~ the bilinear downscale
        assert np.abs(got.astype(float) - half).mean() < 6.0
    assert not list((tmp_path / "f").rglob("*.partial"))


# ------------------------------------------------------------------------------------------ 15. cosmetics
def test_progress_bar_shows_the_values_of_the_step_just_done(tmp_path):
    from tqdm import tqdm

    from rsanet.dist import DistContext
    from rsanet.engine.run_state import RunState
    from rsanet.engine.train import TrainParts, TrainState, _log_step, _Meter
    from rsanet.runlog import RunLogger
    # The loss stays on the device between log steps (one read-back per runtime.log_interval), so the bar's
    # values change at log steps; there they must be the values just read, drawn by that step's update.
    cfg = load_config(None, ["runtime.log_interval=2"])
    buffer = io.StringIO()
    bar = tqdm(total=4, file=buffer, mininterval=0, miniters=1, ncols=200)
    with RunLogger(tmp_path, tensorboard=False) as logger:
        parts = TrainParts(cfg, DistContext(0, 0, 1, torch.device("cpu"), ""), RunState.of(cfg, 1), None, None,
                           None, None, None, None, logger, 4)
        meter = _Meter()
        for step, loss in ((1, 0.75), (2, 0.5)):
            meter.add(torch.tensor(loss), 0.01, 0.1, 8)
            _log_step(parts, TrainState(global_step=step, step_in_epoch=step), meter, 0.02, torch.tensor(1.0), bar)
        assert "loss=0.6250" in buffer.getvalue().split("\r")[-1]  # the mean of the interval, shown at step 2
    bar.close()


def test_decoder_messages_go_into_the_error_not_to_stderr(tmp_path, capfd):
    from rsanet.data.decoders import VideoFileDecoder
    from rsanet.data.records import VideoRecord
    (tmp_path / "bad.mp4").write_bytes(b"this is not a video" * 10)
    with pytest.raises(RuntimeError, match=r"cannot open video .*bad.mp4: Invalid data found when processing input"):
        VideoFileDecoder(tmp_path).frame_count(VideoRecord("bad.mp4", 0))
    err = capfd.readouterr().err
    assert "ERROR opening" not in err and "moov atom" not in err


def test_example_checkpoint_paths_are_where_the_configs_write():
    from rsanet.config import default_work_dir
    texts = [README] + [p.read_text() for p in sorted((ROOT / "tools").glob("*.py"))]
    pairs = []
    for text in texts:
        flat = text.replace("\\\n", " ")
        pairs += re.findall(r"--config (configs/\S+\.yaml)\s+--checkpoint (work_dirs/\S+)/\w+\.pth", flat)
    assert len(pairs) >= 5
    for config, folder in pairs:
        if not folder.startswith("work_dirs/demo/"):  # the demo's own work dir (tools/demo.py)
            assert folder == default_work_dir(config), (config, folder)


def test_readme_documents_every_file_a_run_writes():
    section = README[README.index("### What a run writes"):README.index("### Behaviour worth knowing")]
    for name in ("config.yaml", "train.log", "metrics.jsonl", "curves.png", "tensorboard/", "last.pth", "best.pth",
                 "epoch_NNN.pth", "test_metrics.json", "scores.npz", "per_class.json", "confusion_matrix.png",
                 "test.log", "test/top1"):
        assert f"`{name}" in section, name


def test_predict_with_a_list_config_leaving_num_classes_to_the_label_file(tmp_path, capsys, one_thread):
    from rsanet.engine import run_training
    write_class_folders(tmp_path / "videos", classes=("open", "close"), clips=2)
    lines = ["open/clip 0.mp4 0", "open/clip 1.mp4 0", "close/clip 0.mp4 1", "close/clip 1.mp4 1"]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("open\nclose\n")
    config = tmp_path / "mine.yaml"
    config.write_text(f"data: {{dataset: list, root: {tmp_path / 'videos'}, train_annotations: "
                      f"{tmp_path / 'train.txt'}, label_file: {tmp_path / 'classes.txt'}}}\n")  # no num_classes
    run_training(load_config(config, TINY_OPTS), tmp_path / "w")
    code = load_tool("predict").main(["--config", str(config), "--checkpoint", str(tmp_path / "w" / "last.pth"),
                                      "--opts", *TINY_OPTS, str(tmp_path / "videos" / "open" / "clip 0.mp4")])
    out = capsys.readouterr().out
    assert code == 0 and re.search(r"1\. \d\.\d{4}  (open|close)\n  2\. \d\.\d{4}  (open|close)", out)
