"""Memory benchmark: saved-for-backward bytes are counted exactly (distinct storages, parameters excluded),
per clip, for the model cases and per RSA layer; the table, the ordering of the memory modes and the CLI."""
import pytest
import torch

from rsanet.benchmark import memory
from rsanet.benchmark.common import format_table


def test_saved_bytes_counts_distinct_storages_once():
    x = torch.randn(100, requires_grad=True)  # 400 bytes, excluded
    w = torch.randn(100, requires_grad=True)

    def fn():
        y = x * w  # saves x and w
        z = y.sin()  # saves y (400 bytes)
        return (z[:50] * y[:50].exp()).sum()  # saves z via a view (400) and exp(y[:50]) (200, kept twice)

    assert memory.saved_bytes(fn, exclude=[x, w]) == 400 + 400 + 200


def test_memory_benchmark_rows_and_ordering():
    result = memory.run(batch=2, frames=[2], size=32, arch="resnet18", width=8, stages={"tiny": (16, 4)})
    rows = result["rows"]
    model = {r["case"]: r for r in rows if r["level"] == "model"}
    assert list(model) == list(memory.MODEL_CASES)
    assert model["tsn"]["x vs tsn"] == 1.0
    # the RSA layers keep more than TSN's 3x3 convs; recomputing inside the layer keeps less than saving
    assert model["rsanet"]["saved MiB"] > model["rsanet-recompute"]["saved MiB"] > model["tsn"]["saved MiB"]
    for r in model.values():
        assert r["x vs tsn"] == pytest.approx(r["saved MiB"] / model["tsn"]["saved MiB"])
    layer = {r["case"]: r for r in rows if r["level"] == "layer"}
    # (16 channels, L = 8 -> C_Q = D = 2) on 8x8 maps, T = 2, B = 2: the recompute mode keeps q, v, k (10
    # groups of C_Q), their 10 norms and the stacked (20, 16) weight; "save" adds Ap (C_Q x D per position)
    # and u (L x D per position)
    positions = 2 * 2 * 8 * 8
    recompute = 4 * (positions * 10 * 2 + positions * 10 + 20 * 16)
    assert layer["rsa recompute"]["saved MiB"] * 2 ** 20 * 2 == pytest.approx(recompute)
    assert layer["rsa save"]["saved MiB"] * 2 ** 20 * 2 == pytest.approx(recompute + 4 * positions * (4 + 16))
    assert layer["rsa recompute"]["x input"] == pytest.approx(recompute / (4 * positions * 16))
    table = format_table(rows, result["columns"], title=result["title"]).splitlines()
    assert len(table) == 3 + len(rows) and len({len(line) for line in table[1:]}) == 1


def test_cli_has_the_memory_level():
    from rsanet.cli import benchmark as tool  # tools/benchmark.py runs its main()

    args = vars(tool.build_parser("memory").parse_args(["memory", "--frames", "8", "16", "--size", "112",
                                                        "--channels-last", "off", "on", "--no-layers"]))
    assert args["frames"] == [8, 16] and args["size"] == 112 and args["channels_last"] == ["off", "on"]
    assert args["no_layers"] is True
