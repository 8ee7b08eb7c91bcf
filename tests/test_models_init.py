"""Initialisation of a built model: the RSA factors (``model.transform.rsa.init``) and the classifier
(``model.classifier_init``), checked statistically against standard deviations derived here, independently,
from the authors' module shapes.

The authors' ResNet re-initialises every ``nn.Conv3d`` of an RSA layer with
``kaiming_normal_(mode="fan_out", nonlinearity="relu")``. Their layer (``ops/rsa.py`` of KimManjin/RSA) holds one
stacked q/k/v projection ``Conv3d(C, L*C_Q + C_Q + C_Q, 1)``, ``H1 = Conv3d(C_Q, C_Q*D, window, groups=C_Q)``,
``H2 = Conv3d(1, D, window)``, ``G = Conv3d(1, C_Q, window)``, ``P1 = randn(C_Q, D) * sqrt(1/(M*D))`` and
``I = eye(C_Q)``. The reference below builds tensors of exactly those shapes and asks torch for their fan_out.
"""
import math

import pytest
import torch
from torch import nn

from rsanet.config import load_config
from rsanet.models import build_model
from rsanet.ops import RSA


def authors_stds(c_in, cq, L, d, window, key=True):
    """Std of every factor under the authors' code, from torch's own fan computation on their shapes."""
    gain = nn.init.calculate_gain("relu")

    def fan_out(*shape):
        return nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))[1]

    hidden = L * cq + (cq if key else 0) + cq  # their d_hid: nh*dk + dk + dv ("V" kernel: nh*dk + dv)
    proj = gain / math.sqrt(fan_out(hidden, c_in, 1, 1, 1))
    m = math.prod(window)
    return {"query": proj, "key": proj, "value": proj,
            "H1": gain / math.sqrt(fan_out(cq * d, 1, *window)),  # groups=C_Q: (out, in/groups, t, h, w)
            "H2": gain / math.sqrt(fan_out(d, 1, *window)),
            "G": gain / math.sqrt(fan_out(cq, 1, *window)),
            "P1": math.sqrt(1.0 / (m * d))}


def assert_normal_std(values, std, what):
    """Zero mean and the given std, each within 5 standard errors (n * s^2 / std^2 ~ chi2(n))."""
    x = values.detach().double().flatten()
    n = x.numel()
    mean_z = x.mean().item() / (std / math.sqrt(n))
    var_z = (x.pow(2).mean().item() / std ** 2 - 1.0) / math.sqrt(2.0 / n)
    assert abs(mean_z) < 5 and abs(var_z) < 5, f"{what}: n={n}, std {x.std().item():.4g} vs {std:.4g}"


def rsa_layers(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, RSA)]


def factor_values(layer):
    out = {"query": layer.query.weight, "value": layer.value.weight, "H2": layer.H2}
    for name in ("key", "P1", "H1", "G"):
        part = getattr(layer, name)
        if part is not None:
            out[name] = part.weight if name == "key" else part
    return out


def test_default_rsanet_r50_has_the_authors_init_at_every_stage_width():
    torch.manual_seed(0)
    model = build_model(load_config(None))  # RSANet-R50: 7 RSA layers, L = 8, M = 5x7x7
    layers = rsa_layers(model)
    assert {m.in_channels for _, m in layers} == {64, 128, 256, 512}  # every stage
    for name, layer in layers:
        cq, L, d = layer.head_dim, layer.queries, layer.latent_dim
        ref = authors_stds(layer.in_channels, cq, L, d, layer.kernel_size)
        values = factor_values(layer)
        assert set(values) == set(ref)
        for factor, v in values.items():
            assert_normal_std(v, ref[factor], f"{name}.{factor}")
        assert torch.equal(layer.I, torch.eye(cq))
        # the closed forms quoted in the docs
        assert ref["query"] == pytest.approx(math.sqrt(2 / ((L + 2) * cq)))
        assert ref["H1"] == pytest.approx(math.sqrt(2 / (cq * d * 245)))


def test_variance_preserving_option_keeps_our_scheme():
    """``rsa_init: variance_preserving`` gives our earlier stds. Per stage (C_Q = 8, 16, 32, 64 at res2-res5)
    they are larger than the authors' by C_Q / sqrt(2) for H1 (5.7, 11, 23, 45x), sqrt(D / 2) for H2 (2, 2.8,
    4, 5.7x), sqrt(C_Q M / (2 (M + C_Q))) for G (2.0, 2.7, 3.8, 5.0x) and sqrt(M) = 15.7x for P1."""
    torch.manual_seed(1)
    model = build_model(load_config(None, ["model.transform.rsa.init=variance_preserving"]))
    ratios = {}
    for name, layer in rsa_layers(model):
        cq, d, m = layer.head_dim, layer.latent_dim, layer.window
        ours = {"query": math.sqrt(2 / layer.in_channels), "key": math.sqrt(2 / layer.in_channels),
                "value": math.sqrt(2 / layer.in_channels), "P1": math.sqrt(1 / d), "H1": math.sqrt(cq / (d * m)),
                "H2": math.sqrt(1 / m), "G": math.sqrt(1 / (m + cq))}
        for factor, v in factor_values(layer).items():
            assert_normal_std(v, ours[factor], f"{name}.{factor}")
        ref = authors_stds(layer.in_channels, cq, layer.queries, d, layer.kernel_size)
        ratios[cq] = [round(ours[k] / ref[k], 1) for k in ("H1", "H2", "G", "P1")]
    assert ratios == {8: [5.7, 2.0, 2.0, 15.7], 16: [11.3, 2.8, 2.7, 15.7], 32: [22.6, 4.0, 3.8, 15.7],
                      64: [45.3, 5.7, 5.0, 15.7]}


@pytest.mark.parametrize("kw,key", [(dict(kernel=("basic",)), False), (dict(latent_dim=16), True),
                                    (dict(context=("basic",)), True)])
def test_authors_init_follows_their_shapes_for_other_layer_variants(kw, key):
    torch.manual_seed(2)
    layer = RSA(256, 256, (5, 7, 7), queries=8, **kw)
    layer.reset_parameters("authors")
    ref = authors_stds(256, 32, 8, layer.latent_dim, (5, 7, 7), key=key)
    values = factor_values(layer)
    assert ("key" in values) == key and ("G" in values) == ("relational" in layer.context_terms)
    for factor, v in values.items():
        assert_normal_std(v, ref[factor], factor)


def test_grouped_correlation_uses_the_fan_out_of_the_equivalent_grouped_conv():
    torch.manual_seed(3)
    layer = RSA(256, 256, (3, 3, 3), queries=8, groups=4)
    layer.reset_parameters("authors")
    fan_out = nn.init._calculate_fan_in_and_fan_out(torch.empty(4 * 32, 32 // 4, 3, 3, 3))[1]  # Conv3d(32, 4*D, g=4)
    assert_normal_std(layer.H1, math.sqrt(2 / fan_out), "H1")


def test_a_layer_built_alone_keeps_our_variance_preserving_init_and_unknown_schemes_fail():
    torch.manual_seed(4)
    layer = RSA(128, 128, (5, 7, 7), queries=8)
    assert_normal_std(layer.H1, math.sqrt(16 / (16 * 245)), "H1")
    with pytest.raises(ValueError, match="unknown RSA init scheme 'msra'"):
        layer.reset_parameters("msra")


@pytest.mark.parametrize("scheme", ["xavier_uniform", "normal"])
def test_classifier_init(scheme):
    torch.manual_seed(5)
    opts = ["model.arch=resnet18", "model.width=8", "model.num_classes=174", "model.transform.type=conv2d",
            f"model.classifier_init={scheme}"]
    fc = build_model(load_config(None, opts)).fc  # 64 features -> 174 classes
    assert torch.count_nonzero(fc.bias) == 0
    if scheme == "xavier_uniform":  # U(-a, a), a = sqrt(6 / (fan_in + fan_out)): std a / sqrt(3)
        bound = math.sqrt(6 / (64 + 174))
        assert fc.weight.abs().max() <= bound and fc.weight.abs().max() > 0.95 * bound
        assert_normal_std(fc.weight, bound / math.sqrt(3), "fc")  # the moment test holds for the uniform too
    else:
        assert_normal_std(fc.weight, 0.001, "fc")
