"""The paper's reference numbers (Kim et al., NeurIPS 2021), as printed, in one place.

:data:`ABLATIONS` holds the rows of Tables 2, 4a-d and 6a-c (SS-V1, 8 frames, 224x224, 174 classes):
parameters (M) and FLOPs (G, the paper's FLOPs are multiply-accumulates), and for Table 2 the top-1 / top-5
accuracy. Each row is keyed by the name of its config in ``configs/ablations/`` (one config per paper row), in
the paper's order; ``tools/flops.py --table`` prints our counts next to these, ``tests/test_flops.py`` checks
them, and ``tools/table2_synthetic.py`` quotes the Table 2 accuracies.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

__all__ = ["PaperRow", "ABLATIONS"]


class PaperRow(NamedTuple):
    """A row of the paper's tables as printed."""

    table: str  # "2", "4a", ... "6c"
    row: str  # the config of the row: configs/ablations/<row>.yaml
    params_m: float  # parameters, millions
    flops_g: float  # FLOPs (multiply-accumulates), billions, for one 8-frame clip at 224x224
    top1: Optional[float] = None  # SS-V1 top-1 (%), where quoted here (Table 2)
    top5: Optional[float] = None  # SS-V1 top-5 (%), where quoted here (Table 2)


ABLATIONS: dict[str, PaperRow] = {r.row: r for r in [
    PaperRow("2", "table2_conv2d", 24.3, 32.5, 19.7, 46.6),
    PaperRow("2", "table2_conv3d", 39.3, 57.0, 43.3, 72.2),
    PaperRow("2", "table2_conv2plus1d", 26.8, 37.3, 44.1, 72.9),
    PaperRow("2", "table2_self_attention", 23.4, 32.2, 41.6, 70.9),
    PaperRow("2", "table2_self_attention_content", 23.4, 32.1, 25.9, 56.3),
    PaperRow("2", "table2_self_attention_position", 23.4, 32.1, 41.3, 70.6),
    PaperRow("2", "table2_self_attention_position_nosoftmax", 23.4, 32.1, 44.3, 73.7),
    PaperRow("2", "table2_rsa_context_v", 23.6, 32.6, 45.7, 74.8),
    PaperRow("2", "table2_rsa", 23.6, 33.2, 47.0, 75.7),
    PaperRow("4a", "table4a_kernel_v_context_v", 23.4, 32.3),
    PaperRow("4a", "table4a_kernel_r_context_v", 23.6, 32.7),
    PaperRow("4a", "table4a_kernel_vr_context_v", 23.6, 32.7),
    PaperRow("4a", "table4a_kernel_v_context_r", 23.4, 32.7),
    PaperRow("4a", "table4a_kernel_r_context_r", 23.6, 33.2),
    PaperRow("4a", "table4a_kernel_vr_context_r", 23.6, 33.2),
    PaperRow("4a", "table4a_kernel_v_context_vr", 23.4, 32.7),
    PaperRow("4a", "table4a_kernel_r_context_vr", 23.6, 33.2),
    PaperRow("4a", "table4a_kernel_vr_context_vr", 23.6, 33.2),
    PaperRow("4b", "table4b_latent_none", 32.0, 62.9),
    PaperRow("4b", "table4b_latent_8", 20.5, 32.2),
    PaperRow("4b", "table4b_latent_16", 20.9, 34.7),
    PaperRow("4b", "table4b_latent_32", 21.7, 39.6),
    PaperRow("4b", "table4b_latent_cq_half", 21.1, 32.9),
    PaperRow("4b", "table4b_latent_cq", 22.0, 35.9),
    PaperRow("4c", "table4c_kernel_3x3x3", 20.3, 28.5),
    PaperRow("4c", "table4c_kernel_3x5x5", 20.7, 30.2),
    PaperRow("4c", "table4c_kernel_3x7x7", 21.2, 32.6),
    PaperRow("4c", "table4c_kernel_3x9x9", 22.0, 35.8),
    PaperRow("4c", "table4c_kernel_5x7x7", 22.0, 35.9),
    PaperRow("4c", "table4c_kernel_5x9x9", 23.3, 41.3),
    PaperRow("4d", "table4d_groups_1", 20.2, 35.9),
    PaperRow("4d", "table4d_groups_2", 20.2, 35.9),
    PaperRow("4d", "table4d_groups_4", 20.3, 35.9),
    PaperRow("4d", "table4d_groups_8", 20.5, 35.9),
    PaperRow("4d", "table4d_groups_cq", 22.0, 35.9),
    PaperRow("6a", "table6a_queries_1", 28.1, 252.5),
    PaperRow("6a", "table6a_queries_2", 23.9, 92.8),
    PaperRow("6a", "table6a_queries_4", 21.9, 48.2),
    PaperRow("6a", "table6a_queries_8", 20.9, 34.7),
    PaperRow("6a", "table6a_queries_16", 20.4, 30.2),
    PaperRow("6b", "table6b_layers_0", 24.3, 32.5),
    PaperRow("6b", "table6b_layers_1", 23.6, 33.2),
    PaperRow("6b", "table6b_layers_2", 22.6, 33.7),
    PaperRow("6b", "table6b_layers_4", 22.2, 34.6),
    PaperRow("6b", "table6b_layers_7", 22.0, 35.9),
    PaperRow("6c", "table6c_norm_none", 22.0, 35.9),
    PaperRow("6c", "table6c_norm_batchnorm", 22.0, 35.9),
    PaperRow("6c", "table6c_norm_l2", 22.0, 35.9),
]}
