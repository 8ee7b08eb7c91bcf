"""End to end: tiny real files in each official format (JPEG folders, VP8/VP9 WebM, H.264 MP4, CSV/JSON/txt
annotations) through the real parsers, decoders, sampler and transforms; bad samples; check_dataset.py.

Frame k of every generated video is uniformly gray at level 8 + 12 k, so the decoded clip tells which
frames were sampled; the expected indices come from the literal segment formulas (the authors' tsm rule, the
default, and our uniform rule), not from the sampler.
"""
import importlib.util
import json
import logging
import subprocess
import sys
from fractions import Fraction
from math import floor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rsanet.config import load_config
from rsanet.data import (
    BadDataError,
    DecodeTimeout,
    FrameFolderDecoder,
    VideoFileDecoder,
    VideoRecord,
    build_dataset,
    check_bad_fraction,
)
from rsanet.data.datasets import call_with_timeout
from rsanet.testing.media import frame_index_of, index_frames, write_frame_folder, write_video

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
H, W = 48, 64  # decord mis-sizes some tiny widths (e.g. 48); 64 is safe


def names(dataset):
    return [line for line in (DATA / dataset / "classes.txt").read_text().splitlines() if line]


def centre(n, t, clip=0, clips=1):
    """Literal uniform-rule test indices: floor((i + f) n / T), f = (1/2 + c/K) mod 1."""
    f = (Fraction(1, 2) + Fraction(clip, clips)) % 1
    return [floor((i + f) * n / t) for i in range(t)]


def authors_centre(n, t, clip=0, clips=1):
    """Literal tsm-rule test indices: int(tick (i + f)) with tick = n / T when n > T, else all 0."""
    f = (0.5 + clip / clips) % 1.0
    tick = n / t
    return [int(tick * f + tick * i) for i in range(t)] if n > t else [0] * t


def frame_ids(clip):
    """Frame index shown by each time step of a uint8 (3, T, h, w) clip of gray frames."""
    assert clip.dtype == torch.uint8
    return [frame_index_of(float(v)) for v in clip.float().mean(dim=(0, 2, 3))]


# ------------------------------------------------------------------------------------------ fixtures
SSV1 = {"101": (12, "Pushing something from left to right"), "102": (5, "Holding something"),
        "103": (20, "Putting something upright on the table")}
SSV2 = {"201": (14, "libvpx", "Pushing [something] from right to left"),
        "202": (6, "libvpx-vp9", "Holding [something] next to [something]"),
        "203": (20, "libvpx-vp9", "Turning the camera left while filming [something]")}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    # SS-V1: JPEG frame folders <id>/00001.jpg, ';' CSVs, the labels CSV in its own (non-alphabetical) order.
    v1 = base / "ssv1"
    for vid, (n, _) in SSV1.items():
        write_frame_folder(v1 / "frames" / vid, index_frames(n, H, W))
    (v1 / "labels.csv").write_text((DATA / "ssv1" / "classes_csv_order.txt").read_text())
    (v1 / "train.csv").write_text("".join(f"{v};{c}\n" for v, (_, c) in SSV1.items()))
    (v1 / "test.csv").write_text("".join(f"{v}\n" for v in SSV1))
    (v1 / "bad.csv").write_text(f"101;{SSV1['101'][1]}\n999;Holding something\n103;{SSV1['103'][1]}\n")
    # SS-V2: VP8 / VP9 WebM, JSON lists, labels JSON; 204.webm is corrupt.
    v2 = base / "ssv2"
    for vid, (n, codec, _) in SSV2.items():
        write_video(v2 / "videos" / f"{vid}.webm", index_frames(n, H, W), codec)
    (v2 / "videos" / "204.webm").write_bytes(b"\x1aE\xdf\xa3 this is not a video" * 20)
    (v2 / "labels.json").write_text(json.dumps({c: str(i) for i, c in enumerate(names("ssv2"))}))
    entries = [{"id": v, "label": "x", "template": t, "placeholders": ["x"]} for v, (_, _, t) in SSV2.items()]
    (v2 / "train.json").write_text(json.dumps(entries))
    (v2 / "test.json").write_text(json.dumps([{"id": v} for v in SSV2]))
    (v2 / "bad.json").write_text(json.dumps(entries[:1] + [dict(entries[1], id="204")] + entries[2:]))
    # Diving-48: rgb/<vid_name>.mp4 (H.264), V2 JSON with start/end frames, vocab JSON.
    dv = base / "diving48"
    write_video(dv / "root" / "rgb" / "aaa_00001.mp4", index_frames(20, H, W), "libx264")
    write_video(dv / "root" / "rgb" / "bbb_00002.mp4", index_frames(9, H, W), "libx264")
    (dv / "vocab.json").write_text(json.dumps([n.split("+") for n in names("diving48")]))
    (dv / "train.json").write_text(json.dumps([
        {"vid_name": "aaa_00001", "label": 3, "start_frame": 4, "end_frame": 16},
        {"vid_name": "bbb_00002", "label": 47, "start_frame": 0, "end_frame": 9}]))
    # FineGym: <clip id>.mp4, element txt (one clip absent on disk), categories txt.
    gy = base / "gym99"
    clips = ["A0xAXXysHUo_E_002184_002237_A_0035_0036", "A0xAXXysHUo_E_002184_002237_A_0040_0042",
             "zzzzzzzzzzz_E_000010_000020_A_0001_0003"]
    write_video(gy / "root" / f"{clips[0]}.mp4", index_frames(10, H, W), "libx264")
    write_video(gy / "root" / f"{clips[2]}.mp4", index_frames(16, H, W), "libx264")
    (gy / "categories.txt").write_text("".join(f"Clabel: {i}; set: 1; Glabel: {i}; {n}\n"
                                               for i, n in enumerate(names("gym99"))))
    (gy / "val.txt").write_text(f"{clips[0]} 59\n{clips[1]} 3\n{clips[2]} 71\n")
    return base


def config(media, dataset, backend, extra=()):
    d = media / dataset
    keys = {
        "ssv1": dict(root=d / "frames", train=d / "train.csv", val=d / "train.csv", test=d / "test.csv",
                     labels=d / "labels.csv", classes=174),
        "ssv2": dict(root=d / "videos", train=d / "train.json", val=d / "train.json", test=d / "test.json",
                     labels=d / "labels.json", classes=174),
        "diving48": dict(root=d / "root", train=d / "train.json", val=d / "train.json", test=d / "train.json",
                         labels=d / "vocab.json", classes=48),
        "gym99": dict(root=d / "root", train=d / "val.txt", val=d / "val.txt", test=d / "val.txt",
                      labels=d / "categories.txt", classes=99),
    }[dataset]
    return [f"data.dataset={dataset}", f"data.backend={backend}", f"data.root={keys['root']}",
            f"data.train_annotations={keys['train']}", f"data.val_annotations={keys['val']}",
            f"data.test_annotations={keys['test']}", f"data.label_file={keys['labels']}",
            f"model.num_classes={keys['classes']}", "model.num_segments=8", "data.resize=[48,64]",
            "data.crop_size=32", *extra]


def build(media, dataset, backend, split, extra=()):
    return build_dataset(load_config(None, config(media, dataset, backend, extra)), split)


# ------------------------------------------------------------------------------------------ datasets
def test_ssv1_frames_end_to_end(media):
    val = build(media, "ssv1", "frames", "val")
    assert val.num_videos == 3 and val.num_views == 1 and len(val) == 3 and val.classes == names("ssv1")
    for i, (vid, (n, cls)) in enumerate(SSV1.items()):
        item = val[i]
        assert item["clip"].shape == (3, 8, 32, 32) and item["clip"].dtype == torch.uint8
        assert (item["label"], item["index"], item["video"], item["view"], item["replaced"]) == \
            (names("ssv1").index(cls), i, i, 0, 0)
        assert frame_ids(item["clip"]) == authors_centre(n, 8)  # the 5-frame video: frame 0 only
    uniform = build(media, "ssv1", "frames", "val", ["data.segment_rule=uniform"])
    assert [frame_ids(uniform[i]["clip"]) for i in range(3)] == [centre(n, 8) for n, _ in SSV1.values()]
    train = build(media, "ssv1", "frames", "train")
    torch.manual_seed(0)
    for _ in range(3):
        item = train[2]
        ids, n = frame_ids(item["clip"]), SSV1["103"][0]
        assert all(i * (n // 8) <= k < (i + 1) * (n // 8) for i, k in enumerate(ids))  # frames 16..19 unused
        assert item["label"] == names("ssv1").index("Putting something upright on the table")
    test = build(media, "ssv1", "frames", "test")
    assert [test[i]["label"] for i in range(3)] == [-1, -1, -1]


def test_ssv2_webm_multi_view(media):
    ds = build(media, "ssv2", "video", "val", ["test.clips=2", "test.crops=3"])
    assert ds.num_views == 6 and len(ds) == 18
    for index in range(len(ds)):
        item = ds[index]
        video, view = divmod(index, 6)
        vid = list(SSV2)[video]
        n, _, template = SSV2[vid]
        assert (item["video"], item["view"], item["index"], item["replaced"]) == (video, view, index, 0)
        assert item["label"] == names("ssv2").index(template.replace("[", "").replace("]", ""))
        assert frame_ids(item["clip"]) == authors_centre(n, 8, view // 3, 2), (vid, view)
    assert [build(media, "ssv2", "video", "test")[i]["label"] for i in range(3)] == [-1, -1, -1]


def test_diving48_trimmed_mp4(media):
    uniform = ["model.num_segments=16", "data.segment_rule=uniform"]  # 12 < 16 frames: tsm would show frame 0
    ds = build(media, "diving48", "video", "val", uniform)
    a, b = ds[0], ds[1]
    assert frame_ids(a["clip"]) == [4 + k for k in centre(12, 16)]  # frames 4..15 only (end exclusive)
    assert frame_ids(b["clip"]) == centre(9, 16)
    assert (a["label"], b["label"]) == (3, 47) and ds.classes == names("diving48")
    train = build(media, "diving48", "video", "train", uniform)
    for _ in range(3):
        assert all(4 <= k < 16 for k in frame_ids(train[0]["clip"]))


def test_gym99_drops_missing_clips_loudly(media, caplog):
    with caplog.at_level(logging.WARNING, logger="rsanet.data"):
        ds = build(media, "gym99", "video", "val")
    assert ds.num_videos == 2 and [r.label for r in ds.records] == [59, 71]
    assert [r.path for r in ds.dropped] == ["A0xAXXysHUo_E_002184_002237_A_0040_0042.mp4"]
    assert "1 of 3 clips" in caplog.text and "A0xAXXysHUo_E_002184_002237_A_0040_0042.mp4" in caplog.text
    assert frame_ids(ds[1]["clip"]) == centre(16, 8) and ds[1]["label"] == 71


def test_gym288_reads_its_own_categories(media, tmp_path):
    cats = tmp_path / "gym288_categories.txt"  # the real names are not in the repository: placeholders
    cats.write_text("".join(f"Clabel: {i}; set: {i % 5}; Glabel: {i}; element {i}\n" for i in range(288)))
    ann = tmp_path / "gym288_val_element.txt"
    ann.write_text("zzzzzzzzzzz_E_000010_000020_A_0001_0003 287\n")
    ds = build(media, "gym99", "video", "val", ["data.dataset=gym288", f"data.label_file={cats}",
                                                f"data.val_annotations={ann}", "model.num_classes=288"])
    assert ds.classes[287] == "element 287" and ds[0]["label"] == 287 and frame_ids(ds[0]["clip"]) == centre(16, 8)


def test_list_file_of_frame_folders(media, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("101 12 3\n102 40 5\n")  # 102 has 5 frames on disk: the real count wins
    extra = ["data.dataset=list", f"data.val_annotations={lst}", f"data.label_file={DATA / 'ssv1' / 'classes.txt'}"]
    ds = build(media, "ssv1", "frames", "val", extra)
    assert frame_ids(ds[0]["clip"]) == authors_centre(12, 8) and frame_ids(ds[1]["clip"]) == authors_centre(5, 8)
    assert (ds[0]["label"], ds[1]["label"]) == (3, 5)


# ------------------------------------------------------------------------------------------ decoders
def test_webm_sequential_and_random_access_agree_and_clamp(media):
    root = media / "ssv2" / "videos"
    rec = VideoRecord("201.webm", 0, 0)
    seq, rnd = VideoFileDecoder(root), VideoFileDecoder(root, sequential_exts=())
    idx = [0, 3, 3, 7, 13]
    a, b = seq.decode(rec, idx), rnd.decode(rec, idx)
    assert a.shape == (5, H, W, 3) and np.abs(a.astype(int) - b.astype(int)).max() <= 2
    assert [frame_index_of(f.mean()) for f in a] == idx
    for decoder in (seq, rnd):  # indices past the real end (an over-reported length) take the last frame
        out = decoder.decode_clip(rec, lambda r: np.array([0, 5, 13, 30, 40]))
        assert [frame_index_of(f.mean()) for f in out.frames] == [0, 5, 13, 13, 13]
        assert out.indices.tolist() == [0, 5, 13, 13, 13] and out.num_frames == 14


def test_frame_folder_counts_frames_and_reports_gaps(media, tmp_path):
    folder = write_frame_folder(tmp_path / "v", index_frames(12, 16, 16))
    dec = FrameFolderDecoder(tmp_path)
    out = dec.decode_clip(VideoRecord("v", 40, 0), lambda r: np.arange(r.num_frames))  # lists 40, has 12
    assert out.num_frames == 12 and [frame_index_of(f.mean()) for f in out.frames] == list(range(12))
    (folder / "00012.jpg").unlink()  # a shorter folder is fine
    assert dec.count_frames(folder) == 11
    (folder / "00007.jpg").unlink()  # a gap is damage: reported, never silently cut short
    with pytest.raises(FileNotFoundError, match=r"00007.jpg is missing but 4 later frame files exist"):
        dec.decode_clip(VideoRecord("v", 0, 0), lambda r: np.arange(r.num_frames))
    with pytest.raises(FileNotFoundError, match="frame folder not found: .*nothing"):
        dec.decode_clip(VideoRecord("nothing", 0, 0), lambda r: np.arange(1))


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("dataset,backend,bad,ann", [("ssv1", "frames", "999", "bad.csv"),
                                                     ("ssv2", "video", "204.webm", "bad.json")])
def test_bad_samples_are_logged_replaced_and_counted(media, caplog, dataset, backend, bad, ann):
    extra = [f"data.train_annotations={media / dataset / ann}", f"data.val_annotations={media / dataset / ann}"]
    train = build(media, dataset, backend, "train", extra)
    with caplog.at_level(logging.WARNING, logger="rsanet.data"):
        item = train[1]
    assert item["replaced"] == 1 and item["video"] == 2 and item["label"] == train.records[2].label
    assert str(media / dataset) in caplog.text and bad in caplog.text
    assert [train[i]["replaced"] for i in (0, 2)] == [0, 0]
    val = build(media, dataset, backend, "val", extra + ["test.clips=2"])
    views = [val[i] for i in range(len(val))]
    assert [v["replaced"] for v in views] == [0, 0, 1, 1, 0, 0]  # video 1's two views
    assert [v["video"] for v in views] == [0, 0, 1, 1, 2, 2]  # identity kept at test time
    assert views[2]["label"] == val.records[1].label and torch.count_nonzero(views[2]["clip"]) == 0
    replaced = sum(v["replaced"] for v in views)
    check_bad_fraction(replaced, len(views), 0.5)
    with pytest.raises(BadDataError, match=r"2 of 6 val samples \(33.33%\).*data.max_bad_fraction=0.01"):
        check_bad_fraction(replaced, len(views), 0.01, "val")


def test_a_train_sample_whose_replacements_all_fail_is_marked_not_raised(media, caplog, tmp_path):
    """Ten unreadable videos in a row used to raise inside this rank's loader, stopping it alone while the
    other ranks waited in a collective. Now the item is an all-zero clip with label -1 (left out of the loss
    by the engine) and replaced = 10, which the engine counts against data.max_bad_fraction on all ranks."""
    lst = tmp_path / "gone.txt"
    lst.write_text("".join(f"gone{i} 8 3\n" for i in range(12)))  # folders that do not exist
    extra = ["data.dataset=list", f"data.train_annotations={lst}", f"data.label_file={DATA / 'ssv1' / 'classes.txt'}"]
    train = build(media, "ssv1", "frames", "train", extra)
    with caplog.at_level(logging.WARNING, logger="rsanet.data"):
        item = train[4]
    assert (item["label"], item["replaced"], item["index"], item["view"]) == (-1, 10, 4, 0)
    assert item["clip"].shape == (3, 8, 32, 32) and item["clip"].dtype == torch.uint8
    assert torch.count_nonzero(item["clip"]) == 0
    assert "10 consecutive samples are unreadable" in caplog.text
    assert all(f"gone{i}'" in caplog.text for i in (4, 11, 0, 1))  # the ten tried: 4..11, 0, 1


def test_decoding_is_guarded_by_a_timeout(media, caplog):
    import time

    with pytest.raises(DecodeTimeout, match="slow.mp4 took longer than data.decode_timeout=0.05s"):
        call_with_timeout(lambda: time.sleep(3), 0.05, "slow.mp4")
    assert call_with_timeout(lambda: 7, 1.0, "fast") == 7
    with pytest.raises(ZeroDivisionError):
        call_with_timeout(lambda: 1 / 0, 1.0, "x")
    ds = build(media, "ssv2", "video", "val", ["data.decode_timeout=0.000000001"])
    with caplog.at_level(logging.WARNING, logger="rsanet.data"):
        assert ds[0]["replaced"] == 1
    assert "decode_timeout" in caplog.text and "201.webm" in caplog.text


def test_frame_folders_decode_without_the_watchdog_thread(media, monkeypatch):
    """Local JPEG reads always end (FrameFolderDecoder.can_hang = False): with the tiny timeout that makes a
    video file fail above, frame-folder samples load in the calling thread; the video decoder keeps it."""
    import threading

    ds = build(media, "ssv1", "frames", "val", ["data.decode_timeout=0.000000001"])
    assert ds.decode_timeout == 0.0
    assert build(media, "ssv2", "video", "val", ["data.decode_timeout=5"]).decode_timeout == 5.0

    def no_threads(*args, **kwargs):
        raise AssertionError("a watchdog thread was started for a frame folder")

    monkeypatch.setattr(threading.Thread, "start", no_threads)
    item = ds[0]
    assert item["replaced"] == 0 and frame_ids(item["clip"]) == centre(SSV1["101"][0], 8)


def test_in_memory_decoders_run_without_the_watchdog_thread(monkeypatch):
    """The synthetic decoder declares can_hang = False: with the same tiny timeout that makes a file decoder
    fail above, its samples still load, and no thread is started for them."""
    import threading

    from rsanet.config import load_config

    cfg = load_config(None, ["data.dataset=synthetic", "data.synthetic.train_size=4", "data.synthetic.val_size=4",
                             "data.synthetic.frames=4", "model.num_segments=4", "data.synthetic.resolution=[32,32]",
                             "data.resize=[32,32]", "data.crop_size=32", "data.synthetic.classes=2",
                             "model.num_classes=2", "data.decode_timeout=0.000000001"])
    ds = build_dataset(cfg, "train")
    assert ds.decode_timeout == 0.0 and cfg.data.decode_timeout > 0

    def no_threads(*args, **kwargs):
        raise AssertionError("a watchdog thread was started for an in-memory decoder")

    monkeypatch.setattr(threading.Thread, "start", no_threads)
    item = ds[1]
    assert item["replaced"] == 0 and item["clip"].shape[1] == 4


def test_missing_paths_fail_at_start_up_naming_them(media):
    with pytest.raises(FileNotFoundError, match=r"data.root.*not found: .*no_such_root"):
        build(media, "ssv1", "frames", "train", [f"data.root={media / 'no_such_root'}"])
    with pytest.raises(FileNotFoundError, match=r"data.val_annotations.*not found: .*missing.csv"):
        build(media, "ssv1", "frames", "val", [f"data.val_annotations={media / 'missing.csv'}"])
    with pytest.raises(FileNotFoundError, match=r"data.label_file.*not found"):
        build(media, "ssv2", "video", "val", [f"data.label_file={media / 'labels.json'}"])
    with pytest.raises(FileNotFoundError, match=r"data.test_annotations` is not set"):
        build(media, "ssv1", "frames", "test", ["data.test_annotations=null"])
    with pytest.raises(ValueError, match=r"model.num_classes=174, but .* defines 48 classes"):
        build(media, "diving48", "video", "val", ["model.num_classes=174"])
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        build(media, "ssv1", "frames", "dev")


# ------------------------------------------------------------------------------------------ tool
def load_tool(name):
    """Import tools/<name>.py as a module (in-process: a subprocess would re-import torch, seconds each)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_check(media, tmp_path, capsys, dataset, backend, ann):
    overrides = dict(o.split("=", 1) for o in config(media, dataset, backend, [
        f"data.train_annotations={media / dataset / ann}"]))
    cfg = {}
    for key, value in overrides.items():
        section, name = key.split(".")
        cfg.setdefault(section, {})[name] = yaml.safe_load(value)
    path = tmp_path / f"{dataset}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = load_tool("check_dataset").main(["--config", str(path), "--split", "train"])
    return code, capsys.readouterr().out


def test_check_dataset_lists_exactly_the_bad_files(media, tmp_path, capsys):
    bad_v1 = run_check(media, tmp_path, capsys, "ssv1", "frames", "bad.csv")
    bad_v2 = run_check(media, tmp_path, capsys, "ssv2", "video", "bad.json")
    for (code, out), path in [(bad_v1, media / "ssv1" / "frames" / "999"),
                              (bad_v2, media / "ssv2" / "videos" / "204.webm")]:
        assert code == 1, out
        flagged = [line.split()[1] for line in out.splitlines() if line.startswith("UNREADABLE")]
        assert flagged == [str(path)], out
        assert "2 readable, 1 unreadable" in out
    assert "frames per video: min 12, median 16, mean 16.0, max 20" in bad_v1[1]
    code, out = run_check(media, tmp_path, capsys, "ssv1", "frames", "train.csv")
    assert code == 0 and "UNREADABLE" not in out, out
    assert "Pushing something from left to right" in out


def test_check_dataset_exit_code_from_the_command_line(media, tmp_path):
    """One real process: the script's exit status and its error message for a missing path."""
    path = tmp_path / "missing_root.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "ssv1", "root": str(tmp_path / "nowhere")}}))
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "check_dataset.py"), "--config", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "nowhere" in proc.stderr, proc.stderr
