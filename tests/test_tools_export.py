"""tools/export.py and rsanet.export: the exported model gives the eager model's outputs (to 1e-4).

The eager reference is rebuilt here from the checkpoint's state dict with build_model; exported files are
run with their own runtimes (torch.jit.load, torch.export.load, onnxruntime).
"""
import importlib.util
import json

import pytest
import torch
from test_tools_support import CLASSES, SEGMENTS, SIZE, load_tool, train_tiny, write_motion_video

from rsanet.config import load_config
from rsanet.export import ExportDependencyError, export_model, sample_inputs, verify_export
from rsanet.models import build_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    config, ckpt = train_tiny(root / "rsa", "rsa")
    cfg = load_config(config)
    model = build_model(cfg)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    return {"root": root, "config": config, "ckpt": ckpt, "cfg": cfg, "eager": model.eval(),
            "video": write_motion_video(root / "motion.mp4")}


def fresh_input(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, SEGMENTS, SIZE, SIZE, generator=torch.Generator().manual_seed(123))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_tool_matches_eager(setup, capsys):
    out = setup["root"] / "model.ts"
    rc = load_tool("export").main(["--config", str(setup["config"]), "--checkpoint", str(setup["ckpt"]),
                                   "--format", "torchscript", "--out", str(out), "--video", str(setup["video"])])
    printed = capsys.readouterr().out
    assert rc == 0 and printed.count("(ok, atol 0.0001)") == 3  # batches 2 and 3, and the video clip
    module = torch.jit.load(str(out))
    x = fresh_input(5)  # a batch size never seen while tracing
    with torch.no_grad():
        torch.testing.assert_close(module(x), setup["eager"](x), rtol=0, atol=1e-4)
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["input_shape"] == [-1, 3, SEGMENTS, SIZE, SIZE] and len(meta["classes"]) == CLASSES


def test_exported_program_matches_eager(setup):
    out = export_model(setup["eager"], sample_inputs(setup["cfg"])[0], "exported_program", setup["root"] / "m.pt2")
    module = torch.export.load(str(out)).module()
    x = fresh_input(4)
    with torch.no_grad():
        torch.testing.assert_close(module(x), setup["eager"](x), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match=r"\.pt2"):
        export_model(setup["eager"], sample_inputs(setup["cfg"])[0], "exported_program", setup["root"] / "m.bin")


@pytest.mark.slow
def test_onnx_export(setup):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    out = export_model(setup["eager"], sample_inputs(setup["cfg"])[0], "onnx", setup["root"] / "m.onnx")
    import onnx

    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    if importlib.util.find_spec("onnxruntime") is None:
        (result,) = verify_export(setup["eager"], out, "onnx", [fresh_input(2)])
        assert result.max_abs_diff is None and "onnxruntime is not installed" in result.note
        return
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = fresh_input(3)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), setup["eager"](x), rtol=0, atol=1e-4)


def test_verification_catches_a_different_model(setup):
    out = export_model(setup["eager"], sample_inputs(setup["cfg"])[0], "torchscript", setup["root"] / "other.ts")
    changed = build_model(setup["cfg"]).eval()
    changed.load_state_dict(setup["eager"].state_dict())
    with torch.no_grad():
        changed.fc.bias += 1e-3  # every logit moves by 1e-3 > atol
    results = verify_export(changed, out, "torchscript", [fresh_input(2)])
    assert results[0].max_abs_diff == pytest.approx(1e-3, rel=1e-3) and not results[0].ok(1e-4)


def test_onnx_without_packages_says_what_to_install(setup, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("onnx") else real(name, *a))
    with pytest.raises(ExportDependencyError, match="pip install onnx onnxscript"):
        export_model(setup["eager"], sample_inputs(setup["cfg"])[0], "onnx", setup["root"] / "x.onnx")
