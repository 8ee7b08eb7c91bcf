"""The data benchmark runs end to end on tiny settings and reports sane rows (no speed is asserted)."""
from rsanet.benchmark.common import format_table
from rsanet.benchmark.data import COLUMNS, run


def test_data_benchmark_smoke():
    result = run(frames=[8], backends=["frames"], clips=1, videos=1, repeats=1, warmup=0)
    (row,) = result["rows"]
    assert result["columns"] == COLUMNS and row["backend"] == "frames" and row["T"] == 8
    assert row["decode clips/s"] > 0 and row["decode+train clips/s"] > 0
    assert abs(row["train ms/clip"] * row["decode+train clips/s"] - 1000.0) < 1e-6
    assert "decode+train clips/s" in format_table(result["rows"], result["columns"], result["title"])
