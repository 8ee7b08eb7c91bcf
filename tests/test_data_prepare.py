"""Dataset preparation logic that runs without ffmpeg: commands, job lists, FineGym cut plans, list files."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from rsanet.config import load_config
from rsanet.data import build_dataset
from rsanet.prep.finegym import cut_command, finegym_cut_plan, read_clip_ids
from rsanet.prep.frames import extract_frames_command, ffmpeg_pattern, frame_jobs
from rsanet.prep.jobs import find_ffmpeg, partial_path, run_jobs
from rsanet.testing.media import index_frames, write_frame_folder, write_video

ROOT = Path(__file__).resolve().parents[1]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frame_extraction_command_and_jobs(tmp_path):
    assert ffmpeg_pattern("{:05d}.jpg") == "%05d.jpg" and ffmpeg_pattern("img_{:06d}.png") == "img_%06d.png"
    with pytest.raises(ValueError, match="exactly one"):
        ffmpeg_pattern("{:05d}_{:05d}.jpg")
    cmd = extract_frames_command("ffmpeg", Path("v/1.webm"), Path("f/1"), 256, 1, "{:05d}.jpg", 1)
    assert cmd[cmd.index("-i") + 1] == "v/1.webm" and cmd[-1] == "f/1/%05d.jpg"
    assert cmd[cmd.index("-vf") + 1] == "scale=-1:256" and cmd[cmd.index("-q:v") + 1] == "1"
    assert cmd[cmd.index("-start_number") + 1] == "1"
    videos = tmp_path / "videos"
    for rel in ["a.webm", "rgb/b.mp4", "rgb/c.MP4", "notes.txt"]:
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(b"x")
    done = tmp_path / "frames" / "rgb" / "b"
    done.mkdir(parents=True)
    (done / "00001.jpg").write_bytes(b"x")
    jobs = frame_jobs(videos, tmp_path / "frames")
    assert [(v.relative_to(videos).as_posix(), o.relative_to(tmp_path).as_posix()) for v, o in jobs] == [
        ("a.webm", "frames/a"), ("rgb/c.MP4", "frames/rgb/c")]  # b already extracted: skipped


def test_missing_ffmpeg_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(RuntimeError, match="`no-such-ffmpeg-binary` was not found on PATH. Install it"):
        find_ffmpeg("no-such-ffmpeg-binary")
    (tmp_path / "videos").mkdir()
    code = load_tool("prepare_frames").main(["--videos", str(tmp_path / "videos"), "--frames", str(tmp_path / "f"),
                                             "--ffmpeg", "no-such-ffmpeg-binary"])
    assert code == 2 and "no-such-ffmpeg-binary` was not found" in capsys.readouterr().err


ANNOTATION = {
    "yt1": {
        "E_000010_000020": {"event": 1, "timestamps": [[10.5, 20.25]], "segments": {
            "A_0001_0003": {"stages": 1, "timestamps": [[1.2, 3.4]]},
            "A_0005_0009": {"stages": 3, "timestamps": [[5.0, 6.0], [6.5, 7.5], [8.0, 9.75]]}}},
        "E_000100_000110": {"event": 4, "timestamps": [[100.0, 110.0]], "segments": None},
    },
    "yt2": {"E_000001_000004": {"event": 2, "timestamps": [[1.0, 4.0]], "segments": {
        "A_0000_0001": {"stages": 1, "timestamps": [[0.0, 1.0]]}}}},
}


def test_finegym_two_stage_cut_plan(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "yt1.mkv").write_bytes(b"x")  # yt2 was not downloaded
    ev, cl = tmp_path / "events", tmp_path / "clips"
    events, actions, missing = finegym_cut_plan(ANNOTATION, raw, ev, cl)
    assert missing == ["yt2"]
    assert [(e.src, e.dst, e.start, e.end) for e in events] == [
        (raw / "yt1.mkv", ev / "yt1_E_000010_000020.mp4", 10.5, 20.25)]  # the event without segments is not cut
    assert [(a.src, a.dst, a.start, a.end) for a in actions] == [
        (ev / "yt1_E_000010_000020.mp4", cl / "yt1_E_000010_000020_A_0001_0003.mp4", 1.2, 3.4),
        (ev / "yt1_E_000010_000020.mp4", cl / "yt1_E_000010_000020_A_0005_0009.mp4", 5.0, 9.75)]  # all stages
    only = {"yt1_E_000010_000020_A_0005_0009"}
    events, actions, _ = finegym_cut_plan(ANNOTATION, raw, ev, cl, only=only)
    assert len(events) == 1 and [a.dst.stem for a in actions] == sorted(only)
    cmd = cut_command("ffmpeg", actions[0])
    assert cmd[cmd.index("-ss") + 1] == "5.000" and cmd[cmd.index("-t") + 1] == "4.750"
    assert cmd[cmd.index("-i") + 1] == str(ev / "yt1_E_000010_000020.mp4") and "-an" in cmd
    assert cmd[-1] == str(cl / "yt1_E_000010_000020_A_0005_0009.partial.mp4")  # renamed when complete
    elements = tmp_path / "gym99_val_element.txt"
    elements.write_text("yt1_E_000010_000020_A_0001_0003 4\n\n")
    assert read_clip_ids([elements]) == {"yt1_E_000010_000020_A_0001_0003"}
    bad = {"yt1": {"E_1": {"timestamps": [[5.0, 5.0]], "segments": {"A_1": {"timestamps": [[1, 2]]}}}}}
    with pytest.raises(ValueError, match=r"yt1_E_1: empty time span"):
        finegym_cut_plan(bad, raw, ev, cl)


def test_prepare_list_then_train_from_the_list(tmp_path, capsys):
    root = tmp_path / "frames"
    for vid, n in [("11", 9), ("12", 4)]:
        write_frame_folder(root / vid, index_frames(n, 16, 16))
    labels = tmp_path / "labels.csv"
    labels.write_text((ROOT / "data" / "ssv1" / "classes_csv_order.txt").read_text())
    ann = tmp_path / "train.csv"
    ann.write_text("11;Pushing something from left to right\n12;Holding something\n13;Holding something\n")
    cfg_path = tmp_path / "ssv1.yaml"
    cfg_path.write_text(yaml.safe_dump({"data": {"dataset": "ssv1", "root": str(root), "train_annotations": str(ann),
                                                 "label_file": str(labels)}}))
    out = tmp_path / "lists" / "train.txt"
    code = load_tool("prepare_list").main(["--config", str(cfg_path), "--split", "train", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and "SKIPPED 13" in captured.err  # folder 13 does not exist
    classes = (ROOT / "data" / "ssv1" / "classes.txt").read_text().splitlines()
    assert out.read_text().splitlines() == [f"11 9 {classes.index('Pushing something from left to right')}",
                                            f"12 4 {classes.index('Holding something')}"]
    cfg = load_config(None, ["data.dataset=list", f"data.root={root}", f"data.train_annotations={out}",
                             f"data.label_file={ROOT / 'data' / 'ssv1' / 'classes.txt'}", "data.resize=[16,16]",
                             "data.crop_size=16"])
    ds = build_dataset(cfg, "train")
    assert ds.classes == classes and [ds[i]["label"] for i in range(2)] == [int(line.split()[-1])
                                                                            for line in out.read_text().splitlines()]


def test_prepare_labels_checks_the_pinned_map(tmp_path, capsys):
    vocab = tmp_path / "Diving48_vocab.json"
    names = (ROOT / "data" / "diving48" / "classes.txt").read_text().splitlines()
    vocab.write_text(json.dumps([n.split("+") for n in names]))
    tool = load_tool("prepare_labels")
    pinned = ROOT / "data" / "diving48" / "classes.txt"
    assert tool.main(["--dataset", "diving48", "--label-file", str(vocab), "--check", str(pinned)]) == 0
    vocab.write_text(json.dumps([n.split("+") for n in reversed(names)]))
    assert tool.main(["--dataset", "diving48", "--label-file", str(vocab), "--check", str(pinned)]) == 1
    assert "first difference at class 0" in capsys.readouterr().err


def test_generated_media_round_trip(tmp_path):
    """The media writers used by tests and benchmarks produce files the decoders read back."""
    from rsanet.data import VideoFileDecoder, VideoRecord

    write_video(tmp_path / "v.mp4", index_frames(5, 48, 64), "mpeg4")
    frames = VideoFileDecoder(tmp_path).decode(VideoRecord("v.mp4", 0), [0, 4])
    assert frames.shape == (2, 48, 64, 3) and abs(float(frames[1].mean()) - 56) < 4


def test_jobs_write_partial_results_and_rename_only_on_success(tmp_path):
    """run_jobs with Python standing in for ffmpeg: a finished job appears under its final name, a failed
    one leaves nothing (so an interrupted extraction is redone, never silently kept truncated)."""
    write = "import pathlib, sys; pathlib.Path(sys.argv[1], '00001.jpg').write_bytes(b'x'); sys.exit(int(sys.argv[2]))"
    ok, bad = tmp_path / "frames" / "ok", tmp_path / "frames" / "bad.v2"
    jobs = [([sys.executable, "-c", write, str(partial_path(ok, True)), "0"], ok),
            ([sys.executable, "-c", write, str(partial_path(bad, True)), "3"], bad)]
    failed = run_jobs(jobs, workers=2, is_dir=True)
    assert [f for f, _ in failed] == [bad] and "exit 3" in failed[0][1]
    assert (ok / "00001.jpg").is_file() and not partial_path(ok, True).exists()
    assert not bad.exists() and not partial_path(bad, True).exists()
    clip = tmp_path / "clips" / "a.mp4"
    touch = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_bytes(b'x')"
    assert run_jobs([([sys.executable, "-c", touch, str(partial_path(clip, False))], clip)]) == []
    assert clip.read_bytes() == b"x" and partial_path(clip, False).name == "a.partial.mp4"
