"""The channel-wise window conv behind RSA: every layout strategy (including its hand-written backward)
equals a per-channel loop of plain conv3d calls, in values and gradients."""
import pytest
import torch
import torch.nn.functional as F

from rsanet.ops.channelwise_conv import channelwise_window_conv


def _loop_reference(x, weight):
    """Channel by channel: pad with the window convention, then an ordinary conv3d with F output channels."""
    c = x.shape[1]
    f = weight.shape[0] // c
    t, h, w = weight.shape[-3:]
    xp = F.pad(x, (w // 2, (w - 1) // 2, h // 2, (h - 1) // 2, t // 2, (t - 1) // 2))
    return torch.cat([F.conv3d(xp[:, i:i + 1], weight[i * f:(i + 1) * f]) for i in range(c)], dim=1)


@pytest.mark.parametrize("strategy", ["native", "channels_last", "auto"])
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
