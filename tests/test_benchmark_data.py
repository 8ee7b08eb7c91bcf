"""The input-side benchmark levels, ``data`` (decoding real media formats) and ``synthetic`` (rendering the
synthetic benchmark), run end to end on tiny settings through ``tools/benchmark.py``: the table has the
requested rows and columns and the JSON holds the same rows (no speed is asserted)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsanet.benchmark.common import format_table
from rsanet.benchmark.data import COLUMNS, run
from rsanet.cli import benchmark as tool

ROOT = Path(__file__).resolve().parents[1]


def test_data_benchmark_smoke():
    result = run(frames=[8], backends=["frames"], clips=1, videos=1, repeats=1, warmup=0)
    (row,) = result["rows"]
    assert result["columns"] == COLUMNS and row["backend"] == "frames" and row["T"] == 8
    assert row["decode clips/s"] > 0 and row["decode+train clips/s"] > 0
    assert abs(row["train ms/clip"] * row["decode+train clips/s"] - 1000.0) < 1e-6
    assert "decode+train clips/s" in format_table(result["rows"], result["columns"], result["title"])


def benchmark_tool(*args):
    """``python tools/benchmark.py ARGS`` as a user runs it, with this checkout on PYTHONPATH."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


CASES = {  # level: (tiny arguments, expected columns, expected (key column values) per row, rate column)
    "data": (["--frames", 4, "--backends", "frames", "--clips", 1, "--videos", 1],
             ["backend", "media", "T", "decode clips/s", "decode+train clips/s", "train ms/clip"],
             [{"backend": "frames", "media": "jpeg 100x176, 48 f", "T": 4}], "decode+train clips/s"),
    "synthetic": (["--frames", 4, "--sizes", 16, 24, "--clips", 2],
                  ["T", "HxW", "item", "render clips/s", "render+train clips/s", "train ms/clip"],
                  [{"T": 4, "HxW": "16x16", "item": "uint8 3x4x16x16"},
                   {"T": 4, "HxW": "24x24", "item": "uint8 3x4x24x24"}], "render+train clips/s"),
}


@pytest.mark.parametrize("level", list(CASES))
def test_tool_prints_the_table_and_writes_the_json(level, tmp_path):
    args, columns, keys, rate = CASES[level]
    out = tmp_path / f"{level}.json"
    r = benchmark_tool(level, *args, "--repeats", 1, "--warmup", 0, "--json", out)
    assert r.returncode == 0, r.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert saved["level"] == level and saved["columns"] == columns and saved["meta"]["repeats"] == 1
    rows = saved["rows"]
    assert [{k: row[k] for k in key} for row, key in zip(rows, keys)] == keys and len(rows) == len(keys)
    for row in rows:
        assert all(row[c] > 0 for c in columns if c.endswith("/s"))
        assert row["train ms/clip"] * row[rate] == pytest.approx(1000.0)
    # the printed table is the JSON's: title, header, rule, one line per row, then the JSON's path
    table = format_table(rows, columns, title=saved["title"])
    assert r.stdout.splitlines() == table.splitlines() + [f"wrote {out}"]
    assert r.stdout.splitlines()[1].split() == [w for c in columns for w in c.split()]


def test_bad_values_are_one_line_errors(capsys):
    assert tool.main(["synthetic", "--sizes", "32", "8"]) == 1
    assert capsys.readouterr().err == "error: --sizes must be at least 16 (data.synthetic.resolution), got 8\n"
    assert tool.main(["synthetic", "--frames", "1"]) == 1
    assert "--frames must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: an unknown backend
        tool.main(["data", "--backends", "avi"])
