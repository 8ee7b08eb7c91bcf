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
