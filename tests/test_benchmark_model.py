"""Model benchmark, smoke form: a tiny network, one repeat, a well-formed table with consistent ratios."""
import pytest

from rsanet.benchmark import model as bench
from rsanet.benchmark.common import format_table


def test_model_benchmark_smoke():
    result = bench.run(batch=2, frames=[2], size=32, arch="resnet18", width=8, dtype=["fp32", "bf16"],
                       device="cpu", repeats=1, warmup=0, isolate=False)
    rows = result["rows"]
    assert [(r["model"], r["dtype"]) for r in rows] == [("rsanet", "fp32"), ("rsanet", "bf16"),
                                                         ("tsn", "fp32"), ("tsn", "bf16")]
    by = {(r["model"], r["dtype"]): r for r in rows}
    for r in rows:
        assert r["step ms"] > 0 and r["videos/s"] == pytest.approx(2 / (r["step ms"] / 1e3), rel=1e-6)
        tsn = by[("tsn", r["dtype"])]
        assert r["x vs tsn"] == pytest.approx(r["videos/s"] / tsn["videos/s"], rel=1e-6)
    table = format_table(rows, result["columns"], title=result["title"]).splitlines()
    assert table[0] == result["title"] and len(table) == 3 + len(rows)
    assert len({len(line) for line in table[1:]}) == 1  # header, rule and rows line up


def test_benchmark_models_are_the_paper_networks():
    """`rsanet` is the default RSANet-R50 (7 RSA layers); `tsn` the same network with 2D convs only."""
    rsa, _ = bench.build_benchmark_model("rsanet", frames=8)
    tsn, _ = bench.build_benchmark_model("tsn", frames=8)
    assert len(rsa.replaced) == 7 and tsn.replaced == []
    assert sum(p.numel() for p in rsa.parameters()) == 22_034_302


def test_channels_last_and_memory_modes_run():
    # #18 finding 11: `model --channels-last on` crashed on the RSA layers' 5-D Conv3d weights
    # (model.to(memory_format=channels_last)); the benchmark now uses the trainer's own conversion
    result = bench.run(batch=1, frames=[2], size=32, arch="resnet18", width=8, dtype=["fp32"],
                       channels_last=["off", "on"], memory=["save", "recompute"], device="cpu", repeats=1,
                       warmup=0, isolate=False)
    rows = [(r["model"], r["memory"], r["ch-last"]) for r in result["rows"]]
    assert rows == [("rsanet", "save", "off"), ("rsanet", "recompute", "off"), ("rsanet", "save", "on"),
                    ("rsanet", "recompute", "on"), ("tsn", "-", "off"), ("tsn", "-", "on")]
    assert all(r["step ms"] > 0 and r["x vs tsn"] > 0 for r in result["rows"])


def test_interleaved_cases_share_one_process():
    result = bench.run(batch=1, frames=[2], size=32, arch="resnet18", width=8, dtype=["fp32"], device="cpu",
                       repeats=2, warmup=0, interleave=True)
    assert [r["model"] for r in result["rows"]] == ["rsanet", "tsn"] and "alternated" in result["title"]
    assert all(r["step ms"] > 0 and r["peak MiB"] is None for r in result["rows"])
    assert result["rows"][1]["x vs tsn"] == 1.0
