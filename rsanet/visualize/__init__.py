"""Kernel visualization (paper Fig. 3, Sec. 5.6): what the dynamic kernels of a trained model look like.

:mod:`~rsanet.visualize.capture` reads the kernels of one RSA or self-attention layer at one query position
with forward hooks on the layer's kernel taps; :mod:`~rsanet.visualize.render` draws them with PIL under the
input frames; :func:`visualize_video` does both for a video file or frame folder and writes the PNGs
(``tools/visualize_kernels.py`` is its command line).
"""
from rsanet.visualize.capture import (
                                      KERNEL_KINDS,
                                      KernelCapture,
                                      capture_kernels,
                                      default_layer,
                                      get_kernel_layer,
                                      kernel_changes,
                                      kernel_layers,
                                      mirror_query,
                                      parse_query,
)
from rsanet.visualize.render import Figure, HeatmapCell, Layout, diverging_colors, render_clip, render_kernels
from rsanet.visualize.run import VisualizationResult, visualize_video

__all__ = ["KERNEL_KINDS", "KernelCapture", "capture_kernels", "default_layer", "get_kernel_layer", "kernel_changes",
           "kernel_layers", "mirror_query", "parse_query", "Figure", "HeatmapCell", "Layout", "diverging_colors",
           "render_clip", "render_kernels", "VisualizationResult", "visualize_video"]
