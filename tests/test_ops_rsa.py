"""RSA: the fast path (Eq. 12) equals the literal Eq. 8 reference in float64, values and gradients, over a
covering design of the Table 4 variants; gradcheck; the paper transcription; parameter counts; bad args."""
import pytest
import torch

from rsanet.ops import RSA, paper_eq12, rsa_reference
from rsanet.ops.window import unfold_window

KERNELS = [("basic",), ("relational",), ("basic", "relational")]


def _grads(module, fn, x, weight):
    """Output of fn(module, x) and d(sum(out * weight)) / d(x, every parameter)."""
    x = x.detach().clone().requires_grad_(True)
    params = [p for _, p in sorted(module.named_parameters())]
    y = fn(module, x)
    grads = torch.autograd.grad((y * weight).sum(), [x, *params])
    return y.detach(), grads


def _assert_matches_reference(module, x, tol=1e-10):
    module = module.double()
    x = x.double()
    with torch.no_grad():
        ref = rsa_reference(module, x)
    weight = torch.randn_like(ref)
    y_ref, g_ref = _grads(module, rsa_reference, x, weight)
    y_fast, g_fast = _grads(module, lambda m, inp: m(inp), x, weight)
    scale = max(1.0, y_ref.abs().max().item())
    torch.testing.assert_close(y_fast, y_ref, rtol=0, atol=tol * scale)
    names = ["input"] + [n for n, _ in sorted(module.named_parameters())]
    for name, a, b in zip(names, g_fast, g_ref):
        gscale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, rtol=0, atol=tol * gscale, msg=lambda m: f"grad of {name}: {m}")
    return y_fast


@pytest.mark.parametrize("memory", ["save", "recompute"])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("context", KERNELS)
def test_all_table4a_combinations_match_reference(kernel, context, memory):
    m = RSA(8, 8, kernel_size=(3, 3, 3), queries=2, kernel=kernel, context=context, memory=memory)
    y = _assert_matches_reference(m, torch.randn(2, 8, 4, 6, 6))
    assert y.shape == (2, 8, 4, 6, 6)


# Covering design: every G in {1, 2, C_Q}, D in {4, C_Q}, L in {1, 2, 4}, kernel 3x3x3 / 3x5x5 / 5x7x7 / even
# and mixed sizes, stride 1 and 2, norm l2 / none / batchnorm, each appears at least once, with C_in != C_out.
COVER = [
    # (c_in, c_out, L, D, G, kernel_size, stride, norm, kernel, context, (T, H, W))
    (8, 16, 4, 4, 1, (3, 5, 5), 1, "none", KERNELS[2], KERNELS[2], (4, 6, 6)),
    (8, 8, 1, None, 2, (5, 7, 7), 2, "l2", KERNELS[2], KERNELS[2], (5, 8, 8)),
    (8, 16, 2, 4, None, (2, 4, 4), 2, "batchnorm", KERNELS[2], KERNELS[2], (4, 6, 6)),
    (12, 16, 4, 4, 2, (3, 3, 3), 2, "l2", KERNELS[1], KERNELS[2], (4, 6, 6)),
    (8, 16, 2, None, 1, (5, 7, 7), 1, "batchnorm", KERNELS[1], KERNELS[0], (5, 7, 7)),
    (6, 8, 1, 4, None, (4, 3, 2), 1, "none", KERNELS[2], KERNELS[1], (4, 5, 5)),
    (8, 8, 2, None, None, (1, 3, 3), 1, "l2", KERNELS[0], KERNELS[2], (3, 5, 5)),
]


# Every window-conv strategy and memory mode (their code paths differ; the numbers must not). In float64
# "auto" is "native"; "channels_last" and "batched" run their own layouts and backward on PyTorch's kernels.
PATHS = [("auto", "save"), ("auto", "recompute"), ("channels_last", "save"), ("channels_last", "recompute"),
         ("batched", "save"), ("batched", "recompute")]


@pytest.mark.parametrize("window_conv,memory", PATHS)
@pytest.mark.parametrize("c_in,c_out,L,D,G,ks,stride,norm,kernel,context,thw", COVER)
def test_covering_design_matches_reference(c_in, c_out, L, D, G, ks, stride, norm, kernel, context, thw,
                                           window_conv, memory):
    m = RSA(c_in, c_out, kernel_size=ks, queries=L, latent_dim=D, groups=G, kernel=kernel, context=context,
            norm=norm, stride=stride, window_conv=window_conv, memory=memory)
    t, h, w = thw
    y = _assert_matches_reference(m, torch.randn(2, c_in, t, h, w))
    assert y.shape == (2, c_out, t, h // stride, w // stride)


def test_batchnorm_eval_mode_matches_reference():
    m = RSA(8, 8, kernel_size=(3, 3, 3), queries=2, norm="batchnorm").double()
    with torch.no_grad():  # give the running statistics non-trivial values
        for bn in (m.norm_q, m.norm_k, m.norm_v):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    m.eval()
    _assert_matches_reference(m, torch.randn(2, 8, 3, 5, 5))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("context", KERNELS)
def test_paper_eq12_transcription_matches_reference(kernel, context):
    m = RSA(8, 8, kernel_size=(3, 3, 3), queries=2, groups=2, latent_dim=3, kernel=kernel,
            context=context).double()
    x = torch.randn(2, 8, 3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(paper_eq12(m, x), rsa_reference(m, x), rtol=0, atol=1e-10)


def test_gradcheck_tiny_rsa():
    m = RSA(4, 4, kernel_size=(3, 3, 2), queries=2, groups=1, latent_dim=3).double()
    names, params = zip(*m.named_parameters())
    params = [p.detach().clone().requires_grad_() for p in params]
    x = torch.randn(1, 4, 2, 3, 4, dtype=torch.float64, requires_grad=True)

    def f(inp, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (inp,))

    # full Jacobian with respect to the input; all parameters at once in fast mode (random projections)
    assert torch.autograd.gradcheck(lambda inp: f(inp, *params), (x,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7, fast_mode=True)


def test_bf16_autocast_is_close_to_fp32():
    m = RSA(32, 32, kernel_size=(3, 5, 5), queries=4).eval()
    x = torch.randn(2, 32, 4, 8, 8)
    with torch.no_grad():
        y32 = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y16 = m(x)
    assert y16.dtype == torch.bfloat16
    rel = (y16.float() - y32).norm() / y32.norm()
    assert rel < 2e-2, f"bf16 relative error {rel:.3g}"
    assert torch.isfinite(y16.float()).all()


# ------------------------------------------------------------------------------------------------
# Kernel taps and expand_kernel: the visualisation interface must return the kernel the layer applies.
# ------------------------------------------------------------------------------------------------
def test_kernel_taps_reconstruct_the_output():
    # Basic context only: y_l(n) = sum_m kappa_l(n, m) V(n + offset_m); kappa from the taps via expand_kernel.
    torch.manual_seed(1)
    m = RSA(8, 8, kernel_size=(3, 3, 3), queries=2, latent_dim=3, context=("basic",)).double()
    seen = {}
    m.tap_basic_kernel.register_forward_hook(lambda mod, i, o: seen.__setitem__("basic", o))
    m.tap_relational_kernel.register_forward_hook(lambda mod, i, o: seen.__setitem__("relational", o))
    x = torch.randn(2, 8, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        assert seen["basic"].shape == seen["relational"].shape == (2, 2, 3, 3, 5, 5)  # (B, L, D, T, H, W)
        kappa = m.expand_kernel(seen["basic"]) + m.expand_kernel(seen["relational"])
        assert kappa.shape == (2, 2, 3, 5, 5, 3, 3, 3)  # (B, L, T, H, W, t, h, w)
        v = torch.nn.functional.normalize(m.value(x), dim=1)  # (B, C_Q, T, H, W)
        windows = unfold_window(v, (3, 3, 3))  # (B, C_Q, T, H, W, M)
        y_taps = torch.einsum("blthwm,bcthwm->blcthw", kappa.flatten(-3), windows).reshape(2, 8, 3, 5, 5)
    torch.testing.assert_close(y_taps, y, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# Parameter counts (the paper's parameterization, derived by hand).
# ------------------------------------------------------------------------------------------------
def _count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("kwargs,expected", [
    # Default res4 layer, C = 256, L = 8 -> C_Q = D = G = 32, M = 5*7*7 = 245:
    # q 256*256 = 65,536 + k 256*32 = 8,192 + v 8,192 + H1 245*32*32 = 250,880 + H2 245*32 = 7,840
    # + P1 32*32 = 1,024 + G 245*32 = 7,840 + I 32*32 = 1,024 = 350,528
    ({}, 350_528),
    # kappa^V with X^V (involution-like); no key (nothing reads it): q 65,536 + v 8,192 + P1 1,024
    # + H2 7,840 = 82,592
    ({"kernel": "basic", "context": "basic"}, 82_592),
    # kappa^R with X^V: 81,920 + H1 250,880 + H2 7,840 = 340,640
    ({"kernel": "relational", "context": "basic"}, 340_640),
    # kappa^V with X^R only (no I, no key): 73,728 + P1 1,024 + H2 7,840 + G 7,840 = 90,432
    ({"kernel": "basic", "context": "relational"}, 90_432),
    # G = 1, D = 16, M = 3*5*5 = 75: 81,920 + H1 75*1*16 = 1,200 + H2 75*16 = 1,200 + P1 16*32 = 512
    # + G 75*32 = 2,400 + I 1,024 = 88,256
    ({"groups": 1, "latent_dim": 16, "kernel_size": (3, 5, 5)}, 88_256),
    # batchnorm adds the affine pairs of BN(256) for q and BN(32) for k and v: 350,528 + 512 + 64 + 64
    ({"norm": "batchnorm"}, 351_168),
    # L = 4 -> C_Q = D = G = 64: q 65,536 + k 16,384 + v 16,384 + H1 245*64*64 = 1,003,520
    # + H2 245*64 = 15,680 + P1 4,096 + G 15,680 + I 4,096 = 1,141,376
    ({"queries": 4}, 1_141_376),
])
def test_parameter_count_of_one_layer(kwargs, expected):
    assert _count(RSA(256, 256, **kwargs)) == expected


def test_parameter_count_res2_layer():
    # C = 64, L = 8 -> C_Q = 8: q 64*64 = 4,096 + k 512 + v 512 + H1 245*8*8 = 15,680 + H2 245*8 = 1,960
    # + P1 64 + G 1,960 + I 64 = 24,848
    assert _count(RSA(64, 64)) == 24_848


def test_init_identity_and_shapes():
    m = RSA(64, 64, kernel_size=(3, 5, 5), latent_dim=4, groups=2)
    assert torch.equal(m.I, torch.eye(8))
    assert m.P1.shape == (4, 8) and m.H1.shape == (75, 2, 4) and m.H2.shape == (75, 4) and m.G.shape == (75, 8)


# ------------------------------------------------------------------------------------------------
# Bad arguments.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,needle", [
    ({"out_channels": 20, "queries": 8}, "20"),
    ({"kernel_size": (3, -1, 3)}, "-1"),
    ({"kernel_size": (3, 3)}, "(3, 3)"),
    ({"kernel": ("basic", "relation")}, "'relation'"),
    ({"context": ("contextual",)}, "'contextual'"),
    ({"kernel": ()}, "kernel"),
    ({"context": ("basic", "basic")}, "twice"),
    ({"groups": 3}, "groups (3)"),
    ({"latent_dim": -2}, "-2"),
    ({"norm": "layer"}, "'layer'"),
    ({"stride": 0}, "stride"),
])
def test_bad_arguments_raise_value_error(kwargs, needle):
    args = {"in_channels": 16, "out_channels": 16, "queries": 2, **kwargs}
    with pytest.raises(ValueError) as err:
        RSA(**args)
    assert needle in str(err.value)


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"\(2, 5, 4, 6, 6\)"):
        RSA(8, 8, queries=2)(torch.randn(2, 5, 4, 6, 6))


# ------------------------------------------------------------------------------------------------
# The float32 CPU fast path (channels-last convolutions, hand-written backward), bf16, torch.compile.
# ------------------------------------------------------------------------------------------------
def test_float32_fast_path_matches_float64_reference():
    import copy

    m = RSA(16, 16, kernel_size=(3, 5, 5), queries=2, groups=4)  # 10 x 10 maps: the channels-last strategy
    x = torch.randn(2, 16, 4, 10, 10)
    weight = torch.randn(2, 16, 4, 10, 10)
    y, grads = _grads(m, lambda mod, inp: mod(inp), x, weight)
    m64 = copy.deepcopy(m).double()
    y_ref, grads_ref = _grads(m64, rsa_reference, x.double(), weight.double())
    for a, b in zip((y, *grads), (y_ref, *grads_ref)):
        assert ((a.double() - b).norm() / b.norm()) < 1e-5


def test_output_gradient_layout_does_not_matter():
    # the caller's gradient may be channel-first or channels-last; both must give the same input gradient
    m = RSA(8, 8, kernel_size=(3, 3, 3), queries=2).double()
    x = torch.randn(1, 8, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 8, 3, 5, 5, dtype=torch.float64)
    (gx1,) = torch.autograd.grad(m(x), x, g.contiguous())
    (gx2,) = torch.autograd.grad(m(x), x, g.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(gx1, gx2, rtol=0, atol=1e-12)


def test_bf16_on_the_channels_last_path():
    m = RSA(16, 16, kernel_size=(3, 5, 5), queries=2).eval()
    x = torch.randn(1, 16, 4, 10, 10)
    with torch.no_grad():
        y32 = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y16 = m(x)
    assert ((y16.float() - y32).norm() / y32.norm()) < 2e-2


@pytest.mark.parametrize("memory", ["save", "recompute"])
def test_torch_compile_sees_no_graph_breaks(memory):
    m = RSA(8, 8, kernel_size=(2, 3, 3), queries=2, groups=2, stride=2, memory=memory)
    explanation = torch._dynamo.explain(m)(torch.randn(1, 8, 3, 10, 10, requires_grad=True))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_trace_and_save_for_inference(tmp_path):
    # inference needs no custom autograd functions, so tracing and saving works (tools/export.py relies on it)
    m = RSA(8, 8, kernel_size=(3, 3, 3), queries=2).eval()
    x = torch.randn(2, 8, 3, 10, 10)
    with torch.no_grad():
        traced = torch.jit.trace(m, x, check_trace=False)
        torch.jit.save(traced, str(tmp_path / "rsa.pt"))
        loaded = torch.jit.load(str(tmp_path / "rsa.pt"))
        x2 = torch.randn(3, 8, 3, 10, 10)
        torch.testing.assert_close(loaded(x2), m(x2), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# The hand-written backward: chunked oneDNN paths, memory modes, the tap path, precision under autocast.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("window_conv", ["channels_last", "batched"])
def test_chunked_convolutions_match_reference(monkeypatch, window_conv):
    # tiny chunk limits make every chunk loop run several (uneven) chunks at test sizes:
    # key conv C_Q*D = 6*6 = 36 channels in chunks of 5 channels (30 // 6), value conv F = 12 -> 2 channels,
    # weight gradients in chunks of 4 (24 // 6) and 2 channels, depthwise input gradients in chunks of 1 channel
    from rsanet.ops import channelwise_conv

    monkeypatch.setattr(channelwise_conv, "_ONEDNN_CHUNK", 30)
    monkeypatch.setattr(channelwise_conv, "_WGRAD_CHUNK", 24)
    monkeypatch.setattr(channelwise_conv, "_DEPTHWISE_CHUNK", 7)
    m = RSA(12, 12, kernel_size=(3, 3, 3), queries=2, window_conv=window_conv)
    _assert_matches_reference(m, torch.randn(2, 12, 3, 4, 5).contiguous(memory_format=torch.channels_last_3d))


def _saved_bytes(fn, exclude):
    """Bytes of the distinct storages autograd saves during fn(), excluding those of ``exclude``."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    sizes = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in skip:
            sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(sizes.values())


def test_memory_modes_keep_exactly_the_documented_tensors():
    # C = 16, L = 2 -> C_Q = D = 8. Besides its input, the layer keeps the normalized projections (B, N, L + 2, C_Q)
    # with their norms (B, N, L + 2, 1) and the stacked 1x1x1 weight (C_Q (L + 2), C_in); "save" adds
    # Ap = K (*) r(H1) + P1^T (B, N, C_Q, D) and u = q Ap (B, N, L, D), nothing else (F.normalize alone would
    # keep 2x the projections).
    m = RSA(16, 16, kernel_size=(3, 3, 3), queries=2)
    x = torch.randn(2, 16, 3, 4, 5).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    positions, parts, cq = 2 * 3 * 4 * 5, 4, 8
    common = 4 * (positions * parts * cq + positions * parts + parts * cq * 16)
    saved = {}
    for mode in ("save", "recompute"):
        m.memory = mode
        saved[mode] = _saved_bytes(lambda: m(x), [x, *m.parameters()])
    assert saved["recompute"] == common
    assert saved["save"] == common + 4 * positions * (cq * 8 + 2 * 8)


@pytest.mark.parametrize("window_conv", ["auto", "channels_last", "native", "batched"])
def test_memory_modes_give_identical_results(window_conv):
    # "recompute" re-runs the same convolutions in backward: bitwise the same numbers as "save"
    torch.manual_seed(3)
    m = RSA(16, 16, kernel_size=(3, 5, 5), queries=2, window_conv=window_conv)
    x, weight = torch.randn(2, 16, 4, 9, 9), torch.randn(2, 16, 4, 9, 9)
    results = []
    for mode in ("save", "recompute"):
        m.memory = mode
        results.append(_grads(m, lambda mod, inp: mod(inp), x, weight))
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=0, atol=0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_observed_kernel_taps_keep_the_numbers():
    # a hook on a tap switches to the plain autograd graph (a hook may replace what it sees); same numbers
    m = RSA(8, 8, kernel_size=(3, 3, 3), queries=2).double()
    x = torch.randn(2, 8, 3, 5, 5, dtype=torch.float64)
    weight = torch.randn(2, 8, 3, 5, 5, dtype=torch.float64)
    y0, g0 = _grads(m, lambda mod, inp: mod(inp), x, weight)
    seen = []
    m.tap_relational_kernel.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    y1, g1 = _grads(m, lambda mod, inp: mod(inp), x, weight)
    assert seen == [(2, 2, 4, 3, 5, 5)]  # (B, L, D, T, H, W)
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-12)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_window_convs_and_aggregation_run_in_float32_under_autocast(amp_dtype):
    # #18 finding 2: half-precision partial sums of the window convs' weight gradients lose accuracy (bf16)
    # or overflow (fp16); every convolution and batched product of the aggregation, forward and backward,
    # runs in float32 on every device (the same code path: no device-specific dtype choice).
    from torch.utils._python_dispatch import TorchDispatchMode

    watched = {torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default,
               torch.ops.aten.bmm.default}

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in watched:  # (name, compute dtype, weight shape)
                weight = args[2] if func is torch.ops.aten.convolution_backward.default else args[1]
                self.dtypes.append((func.__name__.split(".")[0], args[0].dtype, tuple(weight.shape)))
            return func(*args, **(kwargs or {}))

    m = RSA(16, 16, kernel_size=(3, 3, 3), queries=2)
    x = torch.randn(1, 16, 3, 10, 10, requires_grad=True)
    with Record() as rec:
        with torch.autocast("cpu", dtype=amp_dtype):
            y = m(x)
        y.float().sum().backward()
    window = [d for d in rec.dtypes if d[0].startswith("convolution") and d[2][1:] == (1, 3, 3, 3)]
    assert {d[0] for d in window} == {"convolution", "convolution_backward"}  # forward and backward seen
    assert all(dtype == torch.float32 for _, dtype, _ in window), window
    assert all(dtype == torch.float32 for name, dtype, _ in rec.dtypes if name == "bmm")
    assert y.dtype == amp_dtype and m.H1.grad.dtype == torch.float32 and torch.isfinite(m.H1.grad).all()


# Table 4b's "D = -" row: H (M*G x M) and P (M x C_Q) not decomposed (rsanet/ops/rsa_full.py), every kernel and
# context, G in {1, 2, C_Q}, stride 1 and 2, each norm; values and gradients against the literal Eq. 8 with P and H.
WHOLE = [
    # (L, G, kernel_size, stride, norm, kernel, context)
    (2, None, (3, 3, 3), 1, "l2", KERNELS[2], KERNELS[2]),
    (2, 1, (3, 3, 3), 2, "none", KERNELS[1], KERNELS[2]),
    (1, 2, (2, 3, 3), 1, "batchnorm", KERNELS[2], KERNELS[0]),
    (4, None, (3, 5, 5), 1, "l2", KERNELS[0], KERNELS[1]),
    (2, 2, (1, 3, 3), 2, "l2", KERNELS[1], KERNELS[0]),
]


@pytest.mark.parametrize("L,G,ks,stride,norm,kernel,context", WHOLE)
def test_undecomposed_rsa_matches_reference(L, G, ks, stride, norm, kernel, context):
    m = RSA(8, 8, kernel_size=ks, queries=L, groups=G, kernel=kernel, context=context, norm=norm, stride=stride,
            decompose=False)
    cq, window = 8 // L, ks[0] * ks[1] * ks[2]
    assert m.H2 is None and m.latent_dim == window
    if "relational" in kernel:
        assert tuple(m.H1.shape) == (window, G or cq, window)  # H, row-major (M, G) x M
    if "basic" in kernel:
        assert tuple(m.P1.shape) == (window, cq)  # P itself
    y = _assert_matches_reference(m, torch.randn(2, 8, 4, 6, 6))
    assert y.shape == (2, 8, 4, 6 // stride, 6 // stride)


def test_undecomposed_rsa_gradcheck_and_what_it_refuses():
    m = RSA(4, 4, kernel_size=(3, 3, 2), queries=2, groups=1, decompose=False).double()
    names, params = zip(*m.named_parameters())
    params = [p.detach().clone().requires_grad_() for p in params]
    x = torch.randn(1, 4, 2, 3, 4, dtype=torch.float64, requires_grad=True)

    def f(inp, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (inp,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7, fast_mode=True)
    with pytest.raises(ValueError, match="decompose=False keeps H"):
        RSA(8, 8, kernel_size=(3, 3, 3), queries=2, latent_dim=4, decompose=False)
    with pytest.raises(ValueError, match="decompose=False has no H2"):
        paper_eq12(m, x)


def test_undecomposed_parameter_count_is_the_paper_s_h_and_p():
    # per layer: q, k, v 1x1x1 convs + H (M*C_Q x M) + P (M x C_Q) + G (M x C_Q) + I (C_Q x C_Q)
    c, L, m_ = 256, 8, 245
    cq = c // L
    m = RSA(c, c, kernel_size=(5, 7, 7), queries=L, decompose=False)
    expected = c * c + 2 * c * cq + m_ * cq * m_ + m_ * cq + m_ * cq + cq * cq
    assert sum(p.numel() for p in m.parameters()) == expected


def test_undecomposed_kernel_taps_see_the_kernel_over_the_window():
    m = RSA(8, 8, kernel_size=(3, 3, 3), queries=2, decompose=False).double()
    seen = {}
    for name in ("tap_basic_kernel", "tap_relational_kernel"):
        getattr(m, name).register_forward_hook(lambda mod, i, o, n=name: seen.__setitem__(n, o))
    x = torch.randn(1, 8, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        plain = RSA(8, 8, kernel_size=(3, 3, 3), queries=2, decompose=False).double()
        plain.load_state_dict(m.state_dict())
        torch.testing.assert_close(y, plain(x), rtol=0, atol=1e-12)  # the tap path computes the same
    assert seen["tap_relational_kernel"].shape == (1, 2, 27, 3, 4, 4)  # (B, L, M, T, H, W): D = M
    kappa = m.expand_kernel(seen["tap_basic_kernel"][0, :, :, 1, 2, 2], dim=1)  # (L, M) -> (L, t, h, w)
    assert kappa.shape == (2, 3, 3, 3)
