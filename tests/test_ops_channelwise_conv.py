"""The channel-wise window conv behind RSA: every layout strategy (including its hand-written backward, its
chunked oneDNN calls and the batched form of shared filters) equals a per-channel loop of plain conv3d
calls, in values and gradients."""
import pytest
import torch
import torch.nn.functional as F

from rsanet.ops import channelwise_conv
from rsanet.ops.channelwise_conv import channelwise_window_conv, window_conv_backward, window_conv_forward


def _loop_reference(x, weight):
    """Channel by channel: pad with the window convention, then an ordinary conv3d with F output channels."""
    c = x.shape[1]
    f = weight.shape[0] // c
    t, h, w = weight.shape[-3:]
    xp = F.pad(x, (w // 2, (w - 1) // 2, h // 2, (h - 1) // 2, t // 2, (t - 1) // 2))
    return torch.cat([F.conv3d(xp[:, i:i + 1], weight[i * f:(i + 1) * f]) for i in range(c)], dim=1)


@pytest.mark.parametrize("strategy", ["native", "channels_last", "batched", "auto"])
@pytest.mark.parametrize("c,f,ks", [
    (3, 4, (3, 3, 3)),  # the input gradient in one depthwise chunk
    (2, 5, (2, 4, 3)),  # even sizes
    (5, 100, (1, 3, 3)),  # chunks of 2 channels (200 <= 256 filters): 2 + 2 + 1
    (2, 260, (1, 3, 1)),  # more filters per channel than a chunk holds: one channel per chunk
])
def test_strategies_match_per_channel_loop(strategy, c, f, ks):
    x = torch.randn(2, c, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c * f, 1, *ks, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, c * f, 4, 5, 6, dtype=torch.float64)
    y = channelwise_window_conv(x, weight, strategy=strategy)
    gx, gw = torch.autograd.grad((y * g).sum(), (x, weight))
    y_ref = _loop_reference(x, weight)
    gx_ref, gw_ref = torch.autograd.grad((y_ref * g).sum(), (x, weight))
    for a, b in ((y, y_ref), (gx, gx_ref), (gw, gw_ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_channels_last_gradcheck():
    x = torch.randn(1, 2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 1, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: channelwise_window_conv(a, b, "channels_last"), (x, weight),
                                    fast_mode=True)


def test_float32_auto_path_matches_float64():
    # 10 x 10 maps take the channels-last path on CPU in float32
    x = torch.randn(2, 8, 4, 10, 10, dtype=torch.float64)
    weight = torch.randn(8 * 6, 1, 3, 5, 5, dtype=torch.float64)
    ref = _loop_reference(x, weight)
    y = channelwise_window_conv(x.float(), weight.float())
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)


def test_bad_weight_and_strategy():
    x = torch.randn(1, 3, 2, 4, 4)
    with pytest.raises(ValueError, match=r"\(7, 1, 3, 3, 3\)"):
        channelwise_window_conv(x, torch.randn(7, 1, 3, 3, 3))
    with pytest.raises(ValueError, match="'fast'"):
        channelwise_window_conv(x, torch.randn(6, 1, 3, 3, 3), strategy="fast")


@pytest.mark.parametrize("strategy", ["native", "channels_last", "batched"])
@pytest.mark.parametrize("ks", [(3, 5, 3), (2, 3, 4)])
def test_shared_filters_with_bias_and_chunks(monkeypatch, strategy, ks):
    # shared (F, 1, t, h, w) filters and a bias, as RSA's value conv uses them; tiny chunk limits make the
    # oneDNN forward chunks (3 channels of F = 4), weight-gradient chunks (2) and depthwise chunks (1) run
    monkeypatch.setattr(channelwise_conv, "_ONEDNN_CHUNK", 12)
    monkeypatch.setattr(channelwise_conv, "_WGRAD_CHUNK", 8)  # weight-gradient chunks of 2 channels
    monkeypatch.setattr(channelwise_conv, "_DEPTHWISE_CHUNK", 5)
    c, f = 7, 4
    x = torch.randn(2, c, 4, 5, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d)
    shared = torch.randn(f, 1, *ks, dtype=torch.float64)
    bias = torch.randn(c * f, dtype=torch.float64)
    g = torch.randn(2, c * f, 4, 5, 6, dtype=torch.float64)
    out = window_conv_forward(x, shared, strategy, bias=bias, shared=True)
    gx, gw = window_conv_backward(g, x, shared, strategy, shared=True)
    x_ref, w_ref = x.clone().requires_grad_(), shared.clone().requires_grad_()
    ref = _loop_reference(x_ref, w_ref.repeat(c, 1, 1, 1, 1)) + bias[None, :, None, None, None]
    gx_ref, gw_ref = torch.autograd.grad((ref * g).sum(), (x_ref, w_ref))
    for a, b in ((out, ref), (gx, gx_ref), (gw, gw_ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


@pytest.mark.parametrize("strategy", ["channels_last", "native"])
def test_per_channel_chunks_match(monkeypatch, strategy):
    monkeypatch.setattr(channelwise_conv, "_ONEDNN_CHUNK", 10)  # 2 channels of F = 5 per oneDNN call
    monkeypatch.setattr(channelwise_conv, "_WGRAD_CHUNK", 15)  # 3 channels per weight-gradient call
    monkeypatch.setattr(channelwise_conv, "_DEPTHWISE_CHUNK", 10)
    x = torch.randn(1, 5, 3, 4, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d)
    weight = torch.randn(25, 1, 3, 3, 3, dtype=torch.float64)
    g = torch.randn(1, 25, 3, 4, 4, dtype=torch.float64)
    out = window_conv_forward(x, weight, strategy)
    gx, gw = window_conv_backward(g, x, weight, strategy)
    x_ref, w_ref = x.clone().requires_grad_(), weight.clone().requires_grad_()
    ref = _loop_reference(x_ref, w_ref)
    gx_ref, gw_ref = torch.autograd.grad((ref * g).sum(), (x_ref, w_ref))
    for a, b in ((out, ref), (gx, gx_ref), (gw, gw_ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_auto_strategy_choices():
    from rsanet.ops.channelwise_conv import resolve_strategy

    small, large = torch.empty(1, 4, 8, 7, 7), torch.empty(1, 4, 8, 28, 28)
    assert resolve_strategy("auto", small.double()) == "native"  # float64: no oneDNN / cuDNN kernels
    assert resolve_strategy("auto", small, shared=True) == "batched"
    assert resolve_strategy("auto", large, shared=True) == "channels_last"
    assert resolve_strategy("auto", small, shared=False) == "channels_last"
    assert resolve_strategy("batched", small, shared=False) == "channels_last"  # no batched per-channel form


@pytest.mark.parametrize("strategy", ["channels_last", "batched", "native"])
@pytest.mark.parametrize("shared", [False, True])
def test_cuda_code_paths_on_the_cpu(monkeypatch, strategy, shared):
    # the CUDA variants (single cuDNN calls, the standard conv's own backward for "batched") run PyTorch's
    # generic kernels when the oneDNN switch is off, so their layouts and reductions are checked here too
    monkeypatch.setattr(channelwise_conv, "_onednn", lambda x: False)
    c, f = 3, 4
    x = torch.randn(2, c, 3, 5, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d)
    weight = torch.randn(f if shared else c * f, 1, 3, 3, 2, dtype=torch.float64)
    g = torch.randn(2, c * f, 3, 5, 4, dtype=torch.float64)
    out = window_conv_forward(x, weight, strategy, shared=shared)
    gx, gw = window_conv_backward(g, x, weight, strategy, shared=shared)
    x_ref, w_ref = x.clone().requires_grad_(), weight.clone().requires_grad_()
    ref = _loop_reference(x_ref, w_ref.repeat(c, 1, 1, 1, 1) if shared else w_ref)
    gx_ref, gw_ref = torch.autograd.grad((ref * g).sum(), (x_ref, w_ref))
    for a, b in ((out, ref), (gx, gx_ref), (gw, gw_ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
