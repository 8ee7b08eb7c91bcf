"""Profile level: operator categories, and a tiny run whose categories add up to the total."""
import pytest

from rsanet.benchmark import profile


@pytest.mark.parametrize("name,category", [
    ("aten::mkldnn_convolution", "window convs"), ("aten::convolution_backward", "window convs"),
    ("aten::bmm", "matmuls"), ("aten::mm", "matmuls"), ("aten::linalg_vector_norm", "norms"),
    ("aten::div_", "norms"), ("aten::copy_", "layout copies"), ("aten::cat", "layout copies"),
    ("aten::add_", "other"), ("_RSACoreBackward", "other"),
])
def test_categories(name, category):
    assert profile.categorize(name) == category


def test_profile_rows_add_up():
    result = profile.run(stages=["tiny"], stage_shapes={"tiny": (16, 28)}, size=56, frames=2, device="cpu",
                         repeats=1, memory=["save", "recompute"])
    rows = result["rows"]
    assert [r["memory"] for r in rows] == ["save", "recompute"] and rows[0]["HxW"] == "7x7"
    for r in rows:
        assert r["total ms"] == pytest.approx(sum(r[c] for c in profile.CATEGORIES))
        assert r["window convs"] > 0 and r["matmuls"] > 0


def test_profile_sets_the_layer_beside_the_3x3_conv_it_replaces():
    """x FLOPs equals a closed-form count of the default layer against TSN's 3x3 conv (C -> C); efficiency is
    x FLOPs / x time."""
    c, side, frames = 16, 7, 2
    result = profile.run(stages=["tiny"], stage_shapes={"tiny": (c, 28)}, size=56, frames=frames, device="cpu",
                         repeats=1)
    row = result["rows"][0]
    n, L, cq, m = frames * side * side, 8, c // 8, 5 * 7 * 7  # positions, queries, C_Q = D, window
    rsa = 2 * n * (c * (L * cq + 2 * cq)  # 1x1x1 projections to q (L*C_Q), k and v (C_Q each)
                   + cq * cq * m  # key window conv: C_Q*D filters of M taps
                   + cq * 2 * cq * m  # value window conv: C_Q channels x [H2 | G] (D + C_Q shared filters)
                   + 3 * L * cq * cq)  # u = q Ap, w = u Bv^T, y = w (I + E)
    conv = 2 * n * c * c * 9
    assert row["x FLOPs"] == pytest.approx(rsa / conv, rel=1e-9)
    assert row["3x3 conv ms"] > 0 and row["x time"] == pytest.approx(row["total ms"] / row["3x3 conv ms"])
    assert row["efficiency"] == pytest.approx(row["x FLOPs"] / row["x time"])
