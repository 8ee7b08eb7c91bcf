"""The Table 2 transforms: shapes, gradients, translation equivariance, attention weights, a literal
self-attention reference, parameter counts against the paper's Table 2, build_transform and bad args."""
import itertools

import pytest
import torch

from rsanet.config import transform_config
from rsanet.ops import RSA, Conv2dTransform, Conv2Plus1dTransform, Conv3dTransform, LocalSelfAttention, build_transform

SA_VARIANTS = [  # Table 2 rows 4-7: sigma(qk + qP), sigma(qk), sigma(qP), qP
    (("content", "position"), True),
    (("content",), True),
    (("position",), True),
    (("position",), False),
]


def _transforms(stride=1):
    """One small instance of every transform type (8 -> 12 channels, window 3 x 5 x 5)."""
    yield "conv2d", Conv2dTransform(8, 12, stride=stride)
    yield "conv3d", Conv3dTransform(8, 12, (3, 5, 5), stride=stride)
    yield "conv2plus1d", Conv2Plus1dTransform(8, 12, (3, 5, 5), stride=stride)
    yield "rsa", RSA(8, 12, (3, 5, 5), queries=3, stride=stride)
    for attention, softmax in SA_VARIANTS:
        yield f"sa-{'+'.join(attention)}-{softmax}", LocalSelfAttention(8, 12, (3, 5, 5), queries=3,
                                                                        attention=attention, softmax=softmax,
                                                                        stride=stride)


ALL = [name for name, _ in _transforms()]


def _get(name, stride=1):
    return dict(_transforms(stride))[name]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("stride", [1, 2])
def test_shape_and_gradient_flow(name, stride):
    m = _get(name, stride)
    x = torch.randn(2, 8, 4, 8, 8, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 12, 4, 8 // stride, 8 // stride)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"


def _valid(size, shift, radius, stride):
    """Output indices whose whole receptive field avoids the borders and the wrap seam of the roll:
    input positions i in [shift + radius, size - radius), all `stride` of them that an output averages."""
    lo, hi = shift + radius, size - radius
    return slice(-(-lo // stride), (hi - stride) // stride + 1)


def _roll_equivariance(m, shift, stride, radius):
    """Shifting the input (circularly) shifts the output, away from the borders and the wrap seam."""
    m = m.double().eval()
    size = (6, 12, 12)
    x = torch.randn(1, 8, *size, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        y_shifted_input = m(torch.roll(x, shifts=shift, dims=(2, 3, 4)))
    out_shift = (shift[0], shift[1] // stride, shift[2] // stride)
    expected = torch.roll(y, shifts=out_shift, dims=(2, 3, 4))
    inner = (slice(None), slice(None), _valid(size[0], shift[0], radius[0], 1),
             _valid(size[1], shift[1], radius[1], stride), _valid(size[2], shift[2], radius[1], stride))
    assert expected[inner].numel() >= 12 * 2 * 2 * 2
    torch.testing.assert_close(y_shifted_input[inner], expected[inner], rtol=1e-9, atol=1e-9)
    # the check is not vacuous: shifting changes the output
    assert not torch.allclose(y_shifted_input, y)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("stride", [1, 2])
def test_translation_equivariance(name, stride):
    m = _get(name, stride)
    # window 3 x 5 x 5: temporal radius 1 (0 for conv2d), spatial radius 2 (1 for conv2d)
    _roll_equivariance(m, shift=(1, 2, 4), stride=stride, radius=(1, 2))


def test_conv2d_keeps_frames_independent():
    m = Conv2dTransform(4, 4).eval()
    x = torch.randn(1, 4, 5, 6, 6)
    x2 = x.clone()
    x2[:, :, 2] += 1.0
    with torch.no_grad():
        d = (m(x2) - m(x)).abs().amax(dim=(0, 1, 3, 4))
    assert d[2] > 0 and torch.all(d[[0, 1, 3, 4]] == 0)


@pytest.mark.parametrize("attention", [("content", "position"), ("content",), ("position",)])
def test_softmax_attention_weights_sum_to_one_over_the_window(attention):
    m = LocalSelfAttention(8, 8, (3, 3, 3), queries=2, attention=attention).double()
    seen = []
    m.tap_attention.register_forward_hook(lambda mod, i, o: seen.append(o))
    with torch.no_grad():
        m(torch.randn(2, 8, 3, 5, 5, dtype=torch.float64))
    a = seen[0]
    assert a.shape == (2, 2, 27, 3, 5, 5)  # (B, L, M, T, H, W)
    torch.testing.assert_close(a.sum(2), torch.ones(2, 2, 3, 5, 5, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (a >= 0).all()
    # a corner position only sees the 2 x 2 x 2 part of its window that lies inside the clip
    assert (a[:, :, :, 0, 0, 0] > 0).sum(-1).eq(8).all()


def _literal_self_attention(m, x):
    """Stand-alone local attention, one position at a time, with explicit index arithmetic."""
    b, _, t, h, w = x.shape
    L, cq = m.queries, m.head_dim
    kt, kh, kw = m.kernel_size
    q = m.query(x).reshape(b, L, cq, t, h, w)
    k = m.key(x) if m.key is not None else None
    v = m.value(x)
    y = torch.zeros(b, L, cq, t, h, w, dtype=x.dtype)
    offsets = list(itertools.product(range(-(kt // 2), (kt - 1) // 2 + 1), range(-(kh // 2), (kh - 1) // 2 + 1),
                                      range(-(kw // 2), (kw - 1) // 2 + 1)))
    for i, j, p in itertools.product(range(t), range(h), range(w)):
        logits, vals = [], []
        for mi, (a, c, e) in enumerate(offsets):
            ii, jj, pp = i + a, j + c, p + e
            inside = 0 <= ii < t and 0 <= jj < h and 0 <= pp < w
            if not inside and m.softmax:
                continue  # masked out of the softmax
            kv = v[:, :, ii, jj, pp] if inside else torch.zeros(b, cq, dtype=x.dtype)
            z = torch.zeros(b, L, dtype=x.dtype)
            if m.key is not None:
                z = z + torch.einsum("blc,bc->bl", q[:, :, :, i, j, p], k[:, :, ii, jj, pp])  # (B, L)
            if m.P is not None:
                z = z + q[:, :, :, i, j, p] @ m.P[mi]
            logits.append(z)
            vals.append(kv)
        z = torch.stack(logits, -1)  # (B, L, M_valid)
        a = torch.softmax(z / cq ** 0.5, -1) if m.softmax else z
        y[:, :, :, i, j, p] = torch.einsum("blm,bmc->blc", a, torch.stack(vals, 1))  # (B, L, C_Q)
    return y.reshape(b, L * cq, t, h, w)


@pytest.mark.parametrize("attention,softmax", SA_VARIANTS)
def test_self_attention_matches_literal_formula(attention, softmax):
    m = LocalSelfAttention(6, 6, (3, 2, 3), queries=2, attention=attention, softmax=softmax).double()
    x = torch.randn(2, 6, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _literal_self_attention(m, x), rtol=0, atol=1e-12)


def test_conv2plus1d_is_spatial_then_temporal():
    m = Conv2Plus1dTransform(4, 6, (3, 3, 3)).double().eval()
    x = torch.randn(1, 4, 5, 6, 6, dtype=torch.float64)
    ws, wt = m.spatial.weight, m.temporal.weight
    assert ws.shape == (6, 4, 1, 3, 3) and wt.shape == (6, 6, 3, 1, 1)
    with torch.no_grad():
        mid = torch.relu(m.bn(torch.nn.functional.conv3d(x, ws, padding=(0, 1, 1))))
        ref = torch.nn.functional.conv3d(mid, wt, padding=(1, 0, 0))
        torch.testing.assert_close(m(x), ref, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Parameter counts: one transform in res4 (256 -> 256) of TSN-R50 reproduces the paper's Table 2.
# ------------------------------------------------------------------------------------------------
def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_table2_parameter_counts_in_res4():
    import torchvision

    r50 = torchvision.models.resnet50(num_classes=174)  # TSN-R50 for SS-V1 (174 classes)
    base = _count(r50)
    replaced = _count(r50.layer3[1].conv2)  # the 3 x 3 conv the transform replaces: 256*256*9 = 589,824
    assert replaced == 589_824
    rows = {  # Table 2 (params, M)
        ("conv2d", (), True): 23.9,  # = the TSN base; the paper prints 24.3 M for this row
        ("conv3d", (), True): 39.3,
        ("conv2plus1d", (), True): 26.8,
        ("self_attention", ("content", "position"), True): 23.4,
        ("self_attention", ("content",), True): 23.4,
        ("self_attention", ("position",), True): 23.4,
        ("self_attention", ("position",), False): 23.4,
        ("rsa", (), True): 23.6,
    }
    for (kind, attention, softmax), paper in rows.items():
        cfg = transform_config(type=kind)  # kernel 5 x 7 x 7, L = 8
        cfg.self_attention.softmax = softmax
        if attention:
            cfg.self_attention.attention = list(attention)
        total = base - replaced + _count(build_transform(cfg, 256, 256))
        assert round(total / 1e6, 1) == paper, (kind, attention, softmax, total)
    # Table 4a: a single RSA layer in res4 -> kappa^V with X^V: 23.4; kappa^R with X^V: 23.6
    for kernel, context, paper in [(["basic"], ["basic"], 23.4), (["relational"], ["basic"], 23.6)]:
        cfg = transform_config(rsa={"kernel": kernel, "context": context})
        total = base - replaced + _count(build_transform(cfg, 256, 256))
        assert round(total / 1e6, 1) == paper


@pytest.mark.parametrize("m,expected", [
    (Conv2dTransform(256, 256), 256 * 256 * 9),  # 589,824
    (Conv3dTransform(256, 256, (5, 7, 7)), 256 * 256 * 245),  # 16,056,320
    # 1 x 7 x 7 conv 3,211,264 + BN 2*256 + 5 x 1 x 1 conv 327,680
    (Conv2Plus1dTransform(256, 256, (5, 7, 7)), 3_211_264 + 512 + 327_680),
    # q 65,536 + k 8,192 + v 8,192 + P 245*32 = 7,840
    (LocalSelfAttention(256, 256, (5, 7, 7), queries=8), 89_760),
    # no P: q + k + v = 81,920
    (LocalSelfAttention(256, 256, (5, 7, 7), queries=8, attention=("content",)), 81_920),
    # no key: q 65,536 + v 8,192 + P 7,840
    (LocalSelfAttention(256, 256, (5, 7, 7), queries=8, attention=("position",), softmax=False), 81_568),
])
def test_baseline_parameter_counts(m, expected):
    assert _count(m) == expected


# ------------------------------------------------------------------------------------------------
# build_transform and bad arguments.
# ------------------------------------------------------------------------------------------------
def test_build_transform_reads_the_config():
    cfg = transform_config(rsa={"kernel_size": [3, 5, 5], "queries": 4, "latent_dim": 0, "groups": 2,
                                "kernel": ["relational"], "context": ["basic"], "norm": "none"})
    m = build_transform(cfg, 32, 64, stride=2)
    assert isinstance(m, RSA)
    assert (m.kernel_size, m.queries, m.head_dim, m.latent_dim, m.groups) == ((3, 5, 5), 4, 16, 16, 2)
    assert (m.kernel_terms, m.context_terms, m.norm, m.stride) == (("relational",), ("basic",), "none", 2)
    cfg = transform_config(type="self_attention", self_attention={"kernel_size": [3, 3, 3], "queries": 2,
                                                                  "attention": ["position"], "softmax": False})
    m = build_transform(cfg, 8, 8)
    assert isinstance(m, LocalSelfAttention) and m.attention == ("position",) and not m.softmax
    assert isinstance(build_transform(transform_config(type="conv2d"), 8, 8), Conv2dTransform)
    assert build_transform(transform_config(type="conv2d"), 8, 8).conv.weight.shape == (8, 8, 1, 3, 3)
    conv3d = build_transform(transform_config(type="conv3d", conv3d={"kernel_size": [3, 3, 3]}), 8, 8)
    assert isinstance(conv3d, Conv3dTransform) and conv3d.conv.weight.shape == (8, 8, 3, 3, 3)
    assert isinstance(build_transform(transform_config(type="conv2plus1d"), 8, 8), Conv2Plus1dTransform)
    # D = C_Q / latent_divisor in each layer (Table 4b "C_Q/2"); decompose=false keeps H whole (Table 4b "-")
    half = build_transform(transform_config(rsa={"latent_divisor": 2}), 64, 64)
    assert (half.head_dim, half.latent_dim, tuple(half.H1.shape)) == (8, 4, (245, 8, 4))
    whole = build_transform(transform_config(rsa={"decompose": False}), 64, 64)
    assert (whole.latent_dim, tuple(whole.H1.shape), tuple(whole.P1.shape), whole.H2) == (245, (245, 8, 245),
                                                                                          (245, 8), None)
    with pytest.raises(ValueError, match="latent_divisor=3 does not divide C_Q = 8"):
        build_transform(transform_config(rsa={"latent_divisor": 3}), 64, 64)


def test_build_transform_unknown_type():
    cfg = transform_config()
    cfg.type = "lambda"
    with pytest.raises(ValueError, match="'lambda'"):
        build_transform(cfg, 8, 8)


@pytest.mark.parametrize("make,needle", [
    (lambda: Conv3dTransform(8, 8, (2, 3, 3)), "(2, 3, 3)"),
    (lambda: Conv2Plus1dTransform(8, 8, (3, 4, 3)), "(3, 4, 3)"),
    (lambda: Conv3dTransform(8, 8, (3, -3, 3)), "-3"),
    (lambda: Conv2dTransform(8, 8, kernel_size=4), "4"),
    (lambda: LocalSelfAttention(8, 12, queries=5), "12"),
    (lambda: LocalSelfAttention(8, 8, queries=2, attention=("content", "relative")), "'relative'"),
    (lambda: LocalSelfAttention(8, 8, queries=2, attention=("content",), softmax=False), "softmax=False"),
    (lambda: LocalSelfAttention(8, 8, kernel_size=(3, 0, 3), queries=2), "(3, 0, 3)"),
    (lambda: Conv3dTransform(8, 8, (3, 3, 3), stride=0), "stride"),
])
def test_bad_arguments_raise_value_error(make, needle):
    with pytest.raises(ValueError) as err:
        make()
    assert needle in str(err.value)
