"""tools/predict.py end to end on a tiny synthetic-trained checkpoint, a generated MP4 and a frame folder."""
import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_tools_support import CLASSES, SEGMENTS, SIZE, load_tool, train_tiny, write_motion_frames, write_motion_video

from rsanet.config import load_config
from rsanet.data.synthetic import CLASS_NAMES
from rsanet.inference import class_names
from rsanet.models import build_model

LINE = re.compile(r"^  (\d)\. (\d\.\d{4})  (.+)$")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    config, ckpt = train_tiny(root / "rsa", "rsa")
    bad = root / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # an MP4 header, then garbage
    return {"config": config, "ckpt": ckpt, "video": write_motion_video(root / "motion.mp4"),
            "frames": write_motion_frames(root / "motion_frames"), "bad": bad, "root": root}


def parse_blocks(text: str) -> dict[str, list[tuple[str, float]]]:
    """{path: [(name, prob), ...]} from the tool's output."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            blocks[current].append((m.group(3), float(m.group(2))))
        elif line and not line.startswith(" "):
            current = line.rsplit(" (", 1)[0]
            blocks[current] = []
    return blocks


def reference_probs(config, ckpt, frames: np.ndarray) -> np.ndarray:
    """Independent pipeline for uint8 frames (T, 32, 32, 3) that need no resize or crop: ImageNet
    normalization, the model from the checkpoint's state dict, softmax."""
    cfg = load_config(config)
    x = torch.from_numpy(frames).float().div(255)  # (T, H, W, 3)
    x = (x - torch.tensor(cfg.data.mean)) / torch.tensor(cfg.data.std)
    x = x.permute(3, 0, 1, 2)[None]  # (T, H, W, 3) -> (1, 3, T, H, W)
    model = build_model(cfg)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    with torch.no_grad():
        return torch.softmax(model.eval()(x), dim=1)[0].numpy()


def test_predict_prints_top5_names_and_survives_bad_inputs(setup, capsys):
    tool = load_tool("predict")
    missing = setup["root"] / "missing.mp4"
    paths = [setup["video"], setup["bad"], setup["frames"], missing]
    rc = tool.main(["--config", str(setup["config"]), "--checkpoint", str(setup["ckpt"]), *map(str, paths)])
    out, err = capsys.readouterr()
    assert rc == 1  # some inputs failed
    blocks = parse_blocks(out)
    assert set(blocks) == {str(setup["video"]), str(setup["frames"])}  # the good ones, after the bad one
    for top in blocks.values():
        names = [n for n, _ in top]
        assert len(top) == min(5, CLASSES) and sorted(names) == sorted(CLASS_NAMES[:CLASSES])  # the label map
        probs = [p for _, p in top]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-3)
    assert str(setup["bad"]) in err and str(missing) in err and "2 of 4 inputs" in err
    # The probabilities are the model's softmax on the test-time clip: frames 1, 3, 5, 7 (TSN test sampling of
    # 4 segments out of 8 frames), read here with PIL.
    folder = setup["frames"]
    frames = np.stack([np.asarray(Image.open(folder / f"{i + 1:05d}.jpg").convert("RGB")) for i in (1, 3, 5, 7)])
    ref = reference_probs(setup["config"], setup["ckpt"], frames)
    for name, prob in blocks[str(setup["frames"])]:
        assert prob == pytest.approx(float(ref[CLASS_NAMES.index(name)]), abs=1.5e-4)


def test_predict_reads_names_from_a_label_file_and_the_checkpoint_config(setup, capsys):
    labels = setup["root"] / "classes.txt"
    labels.write_text("alpha\nbeta\ngamma\ndelta\n")
    tool = load_tool("predict")
    # No --config: the config stored in the checkpoint, with the label map of a list dataset.
    rc = tool.main(["--checkpoint", str(setup["ckpt"]), "--topk", "2", "--opts", "data.dataset=list",
                    f"data.label_file={labels}", str(setup["frames"])])
    out, _ = capsys.readouterr()
    assert rc == 0
    (top,) = parse_blocks(out).values()
    assert len(top) == 2 and {n for n, _ in top} <= {"alpha", "beta", "gamma", "delta"}


def test_class_names_checks_the_label_map(setup, tmp_path):
    cfg = load_config(setup["config"], ["data.dataset=list", f"data.label_file={tmp_path / 'three.txt'}"])
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="3 classes but model.num_classes=4"):
        class_names(cfg)
    cfg = load_config(setup["config"], ["data.dataset=ssv2"])
    with pytest.raises(ValueError, match="data.label_file"):
        class_names(cfg)


def test_predict_on_a_generated_synthetic_video(setup, capsys):
    from rsanet.data.synthetic import SyntheticSpec, render_clip

    rc = load_tool("predict").main(["--config", str(setup["config"]), "--checkpoint", str(setup["ckpt"]),
                                    "synthetic://test/2"])
    out, _ = capsys.readouterr()
    assert rc == 0
    (top,) = parse_blocks(out).values()
    spec = SyntheticSpec(frames=SEGMENTS, height=SIZE, width=SIZE, num_classes=CLASSES)  # the tiny config's
    ref = reference_probs(setup["config"], setup["ckpt"], render_clip(spec, "test", 2))
    for name, prob in top:
        assert prob == pytest.approx(float(ref[CLASS_NAMES.index(name)]), abs=1.5e-4)
