"""Benchmarks, one module per level: ``layer``, ``model``, ``memory``, ``profile``, ``data``, ``synthetic``.

Each level module exposes ``OPTIONS`` (argparse-style ``(flags, kwargs)`` pairs that ``tools/benchmark.py``
turns into its subcommand's arguments) and ``run(**options) -> {"title", "columns", "rows", "meta"}``;
:func:`rsanet.benchmark.common.format_table` prints the rows. Speed and memory targets live here and in
the tool's output, never in tests.
"""
