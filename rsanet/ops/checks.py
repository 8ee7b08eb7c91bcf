"""Argument checks shared by the transforms: one wording for every layer's bad arguments (a ValueError that
names the argument and the value it got)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

__all__ = ["positive_int", "check_channels_stride", "parse_terms", "window_problem", "terms_problem", "OddWindow",
           "check_odd_window"]


def positive_int(value, name: str) -> int:
    """``value`` when it is an int >= 1 (not a bool), else a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_channels_stride(in_channels, out_channels, stride) -> tuple[int, int, int]:
    """The three sizes every transform takes, each a positive int."""
    return (positive_int(in_channels, "in_channels"), positive_int(out_channels, "out_channels"),
            positive_int(stride, "stride"))


def parse_terms(value: str | Iterable[str], allowed: Sequence[str], name: str) -> tuple[str, ...]:
    """A non-empty subset of ``allowed`` given as one name or an iterable of names, in canonical order."""
    names = (value,) if isinstance(value, str) else tuple(value)
    unknown = [v for v in names if v not in allowed]
    if unknown:
        raise ValueError(f"{name}: unknown term {unknown[0]!r}; choose from {list(allowed)}")
    if not names:
        raise ValueError(f"{name} must name at least one of {list(allowed)}, got {value!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{name} lists a term twice: {value!r}")
    return tuple(a for a in allowed if a in names)


# Checks of a transform's config section (``model.transform.<type>``), run when the config is loaded: each
# returns what is wrong, naming the full key, or None.
def window_problem(kernel_size: Sequence[int], key: str, odd: bool = False) -> str | None:
    """``kernel_size`` must be three positive sizes [t, h, w] (odd along every axis when ``odd``)."""
    if len(kernel_size) != 3 or any(k < 1 for k in kernel_size):
        return f"`{key}` must be three positive sizes [t, h, w], got {list(kernel_size)}"
    if odd and any(k % 2 == 0 for k in kernel_size):
        return f"`{key}` must be odd along every axis for this transform, got {list(kernel_size)}"
    return None


def terms_problem(values: Sequence[str], key: str, allowed: Sequence[str]) -> str | None:
    """``values`` must be a non-empty set of ``allowed`` names (the config's types already refuse others)."""
    if not values or len(set(values)) != len(values):
        return f"`{key}` must be a non-empty set of {'/'.join(allowed)}, got {list(values)}"
    return None


@dataclass
class OddWindow:
    """The options of a transform whose only option is its window, odd along every axis (``conv3d`` and
    ``conv2plus1d``: ``model.transform.<type>.kernel_size``)."""

    kernel_size: list[int] = field(default_factory=lambda: [5, 7, 7])  # t x h x w, odd sizes (Table 2: 5x7x7)


def check_odd_window(options: OddWindow, key: str) -> Optional[str]:
    return window_problem(options.kernel_size, f"{key}.kernel_size", odd=True)
