"""Layer benchmark, smoke form: a tiny shape, one repeat, a well-formed table; skipping and the CLI."""
import json

import pytest

from rsanet.benchmark import layer
from rsanet.benchmark.common import format_table, median_time, write_json


def test_layer_benchmark_smoke(tmp_path):
    result = layer.run(stages={"tiny": (16, 6)}, frames=2, batch=1, repeats=1, warmup=0, device="cpu",
                       dtype=["fp32"], impl=["ours", "paper_eq12", "reference"], isolate=False)
    rows = result["rows"]
    assert [r["impl"] for r in rows] == ["ours", "paper_eq12", "reference"]
    for r in rows:
        assert r["fwd+bwd ms"] > 0 and r["peak MiB"] >= 0 and "note" not in r
        assert r["x vs paper"] == pytest.approx(rows[1]["fwd+bwd ms"] / r["fwd+bwd ms"], rel=0.01)
    table = format_table(rows, result["columns"], title=result["title"]).splitlines()
    assert table[0] == result["title"] and len(table) == 2 + 1 + len(rows)
    assert len({len(line) for line in table[1:]}) == 1  # header, rule and rows line up
    assert table[1].split() == [w for c in result["columns"] for w in c.split()]
    write_json(tmp_path / "layer.json", result)
    assert json.loads((tmp_path / "layer.json").read_text())["rows"][0]["impl"] == "ours"


def test_cpu_cases_run_in_a_fresh_process():
    result = layer.run(stages={"tiny": (8, 4)}, frames=2, repeats=1, warmup=0, device="cpu", dtype=["bf16"],
                       impl=["ours"])
    (row,) = result["rows"]
    assert row["fwd+bwd ms"] > 0 and row["peak MiB"] >= 0 and "fresh process" in result["title"]


def test_reference_is_skipped_over_the_memory_budget():
    result = layer.run(stages=["res2"], impl=["reference"], device="cpu", memory_budget_gb=1.0)
    (row,) = result["rows"]
    assert "fwd+bwd ms" not in row and row["note"].startswith("skipped: needs ~")
    # the estimate is linear in the batch and the number of positions
    assert layer.reference_bytes(64, 56, 8, 2) == 2 * layer.reference_bytes(64, 56, 8, 1)
    assert layer.reference_bytes(64, 56, 16, 1) == 2 * layer.reference_bytes(64, 56, 8, 1)


def test_bad_stage_and_dtype_are_named():
    with pytest.raises(ValueError, match="'res6'"):
        layer.run(stages=["res6"], device="cpu")
    with pytest.raises(ValueError, match="'fp8'"):
        layer.run(stages=["res5"], dtype=["fp8"], device="cpu")


def test_median_time_counts_runs():
    calls = []
    median_time(lambda: calls.append(1), repeats=3, warmup=2, device=layer.resolve_device("cpu"))
    assert len(calls) == 5
    with pytest.raises(ValueError, match="repeats"):
        median_time(lambda: None, repeats=0, warmup=0, device=layer.resolve_device("cpu"))


def test_cli_parses_layer_options():
    from rsanet.cli import benchmark as tool  # tools/benchmark.py runs its main()

    args = tool.build_parser("layer").parse_args(
        ["layer", "--batch", "2", "--frames", "16", "--dtype", "fp32", "bf16", "--impl", "ours", "paper_eq12",
         "--stages", "res4", "--repeats", "3", "--json", "out.json"])
    assert (args.batch, args.frames, args.dtype, args.impl, args.stages, args.repeats, args.json) == (
        2, 16, ["fp32", "bf16"], ["ours", "paper_eq12"], ["res4"], 3, "out.json")
    with pytest.raises(SystemExit):
        tool.build_parser("layer").parse_args(["layer", "--frames", "12"])


def test_ours_runs_once_per_strategy_and_memory_mode():
    # #18 finding 1: every window-conv strategy is benchmarked side by side (on CUDA with --device cuda)
    result = layer.run(stages={"tiny": (16, 6)}, frames=2, batch=1, repeats=1, warmup=0, device="cpu",
                       dtype=["fp32"], impl=["ours", "paper_eq12"], isolate=False,
                       window_conv=["native", "channels_last", "batched"], memory=["save", "recompute"])
    rows = result["rows"]
    assert [(r["impl"], r["window conv"], r["memory"]) for r in rows] == [
        ("ours", w, m) for w in ("native", "channels_last", "batched") for m in ("save", "recompute")
    ] + [("paper_eq12", None, None)]
    paper = rows[-1]["fwd+bwd ms"]
    assert all(r["x vs paper"] == pytest.approx(paper / r["fwd+bwd ms"]) for r in rows)


def test_interleaved_cases_of_a_stage():
    result = layer.run(stages={"a": (16, 6), "b": (16, 4)}, frames=2, batch=1, repeats=2, warmup=0,
                       device="cpu", dtype=["fp32"], impl=["ours", "paper_eq12"], interleave=True,
                       memory=["save", "recompute"])
    rows = result["rows"]
    assert [(r["stage"], r["impl"], r["memory"]) for r in rows] == [
        (s, impl, mem) for s in ("a", "b") for impl, mem in (("ours", "save"), ("ours", "recompute"),
                                                             ("paper_eq12", None))]
    assert all(r["fwd+bwd ms"] > 0 and r["peak MiB"] is None for r in rows) and "alternated" in result["title"]
