"""tools/visualize_kernels.py and rsanet.visualize: the kernels drawn are the ones the layer computes.

The reference kernels are computed here literally from the layer's input (captured with a test-owned
forward pre-hook) and its parameters: explicit window loops, float64, the paper's formulas (Eqs. 5-10 and
the self-attention softmax of Eq. 2), never through the layer's forward or its taps.
"""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_tools_support import load_tool, train_tiny, write_motion_video

from rsanet.config import load_config
from rsanet.inference import load_clip, load_model
from rsanet.visualize import Layout, capture_kernels, mirror_query, render_kernels

LAYER = "layer1.1.conv2"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz")
    video = write_motion_video(root / "motion.mp4")
    out = {"video": video, "root": root}
    for kind in ("rsa", "self_attention"):
        config, ckpt = train_tiny(root / kind, kind)
        cfg = load_config(config)
        out[kind] = (config, ckpt, cfg, load_model(cfg, ckpt))
    return out


# ------------------------------------------------------------------------------------------ references
def _window(t: int, h: int, w: int, size, shape):
    """[(m, (t', h', w') or None)] of the window around (t, h, w), row-major offsets from -(k // 2)."""
    out = []
    kt, kh, kw = size
    for a in range(kt):
        for b in range(kh):
            for c in range(kw):
                p = (t + a - kt // 2, h + b - kh // 2, w + c - kw // 2)
                inside = all(0 <= v < s for v, s in zip(p, shape))
                out.append(p if inside else None)
    return out


def _proj(conv, x):  # 1x1x1 conv as a matrix product: (C_out, C_in) x (C_in, T, H, W)
    return torch.einsum("oc,cthw->othw", conv.weight.detach()[:, :, 0, 0, 0].double(), x.double())


def _keys(k, positions):
    """(M, C) key vectors of the window, zeros outside the clip."""
    rows = [k[:, p[0], p[1], p[2]] if p is not None else torch.zeros(k.shape[0], dtype=k.dtype) for p in positions]
    return torch.stack(rows)


def literal_rsa(layer, x, query):
    """kappa^V = q (H2 P1)^T and kappa^R = corr(q, K) H1 H2^T at ``query``, (L, t, h, w) each, float64."""
    L, cq, g = layer.queries, layer.head_dim, layer.groups
    t, h, w = query
    q = _proj(layer.query, x)[:, t, h, w].reshape(L, cq)
    q = q / q.norm(dim=1, keepdim=True)
    k = _proj(layer.key, x)
    k = k / k.norm(dim=0, keepdim=True)
    keys = _keys(k, _window(t, h, w, layer.kernel_size, x.shape[1:]))  # (M, C_Q)
    m = keys.shape[0]
    h1, h2, p1 = (p.detach().double() for p in (layer.H1, layer.H2, layer.P1))
    basic = q @ (h2 @ p1).t()  # (L, C_Q) x (C_Q, M)
    corr = (q[:, None, :] * keys[None]).reshape(L, m, g, cq // g).sum(-1)  # (L, M, G) group-wise correlation
    relational = corr.reshape(L, m * g) @ (h1.reshape(m * g, -1) @ h2.t())  # (L, M*G) x (M*G, M)
    return {"basic": basic.reshape(L, *layer.kernel_size), "relational": relational.reshape(L, *layer.kernel_size)}


def literal_attention(layer, x, query):
    """softmax_m((q K_m + q P_m) / sqrt(C_Q)) over the window positions inside the clip, (L, t, h, w)."""
    L, cq = layer.queries, layer.head_dim
    t, h, w = query
    q = _proj(layer.query, x)[:, t, h, w].reshape(L, cq)
    positions = _window(t, h, w, layer.kernel_size, x.shape[1:])
    logits = (q @ _keys(_proj(layer.key, x), positions).t() + q @ layer.P.detach().double().t()) / math.sqrt(cq)
    inside = torch.tensor([p is not None for p in positions])
    attn = torch.softmax(logits.masked_fill(~inside, float("-inf")), dim=1)
    return {"attention": attn.reshape(L, *layer.kernel_size)}


def layer_input(model, clip):
    """The tensor the layer receives for ``clip`` (C, T, H, W), via a test-owned pre-hook: (C_in, T, H, W)."""
    seen = {}
    handle = model.get_submodule(LAYER).register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    with torch.no_grad():
        model(clip[None])
    handle.remove()
    return seen["x"][0]


def decode_colors(rgb):
    """Inverse of the documented map: (255, a, a) -> 1 - a/255, (a, a, 255) -> -(1 - a/255)."""
    rgb = rgb.astype(np.float64)
    positive = rgb[..., 0] == 255
    return np.where(positive, 1 - rgb[..., 1] / 255, -(1 - rgb[..., 0] / 255))


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("kind", ["rsa", "self_attention"])
def test_drawn_kernels_equal_the_layer_computation(runs, kind):
    _, _, cfg, model = runs[kind]
    clip, frames = load_clip(cfg, runs["video"])
    query = (1, 3, 5)
    cap = capture_kernels(model, LAYER, clip, frames, query)
    layer = model.get_submodule(LAYER)
    literal = (literal_rsa if kind == "rsa" else literal_attention)(layer, layer_input(model, clip), query)
    assert list(cap.kernels) == list(literal)
    for name, ref in literal.items():
        torch.testing.assert_close(cap.kernels[name].double(), ref, rtol=1e-5, atol=1e-6)
    fig = render_kernels(cap, Layout(cell=60))
    pixels = np.asarray(fig.image)
    assert len(fig.heatmaps) == len(literal) * layer.queries * layer.kernel_size[0]
    for cell in fig.heatmaps:
        ref = literal[cell.kind][cell.query, cell.time]  # (h, w)
        vmax = float(literal[cell.kind][cell.query].abs().max())
        assert cell.vmax == pytest.approx(vmax, rel=1e-5)
        kh, kw = ref.shape
        ys = cell.y + cell.block * np.arange(kh)[:, None] + cell.block // 2
        xs = cell.x + cell.block * np.arange(kw)[None, :] + cell.block // 2
        drawn = decode_colors(pixels[ys, xs])  # (h, w) values / vmax read back from the picture
        np.testing.assert_allclose(drawn, ref.numpy() / vmax, atol=0.51 / 255)


def test_reversal_keeps_the_basic_kernel_and_changes_the_relational_one(runs):
    # layer1.1.conv2 sees frame-wise features (stem, layer1.0, conv1; eval-mode BN), so q at (t, h, w) of the
    # reversed clip equals q at (T-1-t, h, w) of the original: kappa^V = q P^T is the same there, while
    # kappa^R also reads the keys of the reversed neighbourhood.
    _, _, cfg, model = runs["rsa"]
    clip, frames = load_clip(cfg, runs["video"])
    fwd = capture_kernels(model, LAYER, clip, frames, (2, 3, 5))
    rev = capture_kernels(model, LAYER, clip.flip(1), frames.flip(0), mirror_query(fwd.query, fwd.feature_shape))
    assert rev.query == (1, 3, 5)
    torch.testing.assert_close(rev.kernels["basic"], fwd.kernels["basic"], rtol=1e-5, atol=1e-6)
    change = (rev.kernels["relational"] - fwd.kernels["relational"]).norm() / fwd.kernels["relational"].norm()
    assert change > 0.05, f"relational kernel barely changed under reversal ({change:.2e})"


def test_tool_end_to_end_writes_the_figures(runs, capsys):
    config, ckpt, cfg, model = runs["rsa"]
    out = runs["root"] / "out"
    tool = load_tool("visualize_kernels")
    rc = tool.main(["--config", str(config), "--checkpoint", str(ckpt), "--video", str(runs["video"]), "--reverse",
                    "--tensorboard", "--cell", "64", "--query", "1,4,4", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "feature map (T, H, W) = (4, 8, 8)" in printed and "relational" in printed
    # Grid: one frame row + (basic, relational) x L=2 query rows; t=3 columns; documented Layout geometry.
    layout = Layout(cell=64)
    width = layout.label_width + layout.pad + 3 * (64 + layout.pad)
    height = layout.title_height + layout.pad + (1 + 2 * 2) * (64 + layout.pad)
    for suffix in ("", "_reversed"):
        kernels = Image.open(out / f"motion_{LAYER}_kernels{suffix}.png")
        assert kernels.size == (width, height)
        strip = Image.open(out / f"motion_{LAYER}_clip{suffix}.png")
        assert strip.size == (layout.label_width + layout.pad + 4 * (64 + layout.pad), height - 4 * (64 + layout.pad))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # The PNG is the rendering of the layer's kernels, and the .npz holds the literal values.
    clip, frames = load_clip(cfg, runs["video"])
    cap = capture_kernels(model, LAYER, clip, frames, (1, 4, 4))
    expected = np.asarray(render_kernels(cap, layout).image)
    assert np.array_equal(np.asarray(Image.open(out / f"motion_{LAYER}_kernels.png").convert("RGB")), expected)
    saved = np.load(out / f"motion_{LAYER}_kernels.npz")
    literal = literal_rsa(model.get_submodule(LAYER), layer_input(model, clip), (1, 4, 4))
    np.testing.assert_allclose(saved["kernel_relational"], literal["relational"].numpy(), rtol=1e-5, atol=1e-6)
    assert tuple(saved["query"]) == (1, 4, 4)


def test_tool_rejects_bad_layer_and_query(runs, capsys):
    config, ckpt, _, _ = runs["rsa"]
    tool = load_tool("visualize_kernels")
    base = ["--config", str(config), "--checkpoint", str(ckpt), "--video", str(runs["video"]),
            "--out", str(runs["root"] / "bad")]
    assert tool.main(base + ["--layer", "layer1.0.conv2"]) == 1
    err = capsys.readouterr().err
    assert "layer1.0.conv2" in err and LAYER in err  # names the bad layer and lists the valid one
    assert tool.main(base + ["--query", "9,0,0"]) == 1
    assert "(9, 0, 0)" in capsys.readouterr().err
    assert tool.main(base + ["--query", "1,2"]) == 1
    assert "T,H,W" in capsys.readouterr().err
