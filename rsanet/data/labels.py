"""Class lists and the left/right class pairs that decide the horizontal-flip policy.

A class is direction-sensitive when swapping the whole words "left" and "right" in its name gives the name of
another class of the same dataset ("Pushing something from left to right" <-> "... from right to left").
Substrings do not count ("upright"), and neither does a "right" whose swap names no class ("pulling it right
out"). On the 174 Something-Something classes this gives exactly three pairs (pushing, pulling, turning the
camera). The same pairs are skipped by ``skip_left_right`` and relabelled by ``swap_left_right``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

__all__ = ["AnnotationError", "read_class_list", "check_unique_names", "swap_left_right", "left_right_pairs"]

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


class AnnotationError(ValueError):
    """An annotation or label file that cannot be read; the message names the file (and line)."""


def read_class_list(path: str | Path) -> list[str]:
    """One class name per line (empty lines ignored); line n is class n. Duplicates are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    check_unique_names(names, path)
    return names


def check_unique_names(names: Sequence[str], source: str | Path) -> None:
    """Raise :class:`AnnotationError` naming ``source`` if ``names`` is empty or lists a name twice."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise AnnotationError(f"{source}: class {name!r} is listed twice")
        seen.add(name)
    if not names:
        raise AnnotationError(f"{source}: no class names")


def swap_left_right(name: str) -> str:
    """``name`` with the whole words left and right exchanged, keeping their capitalization."""

    def swap(m: re.Match) -> str:
        word = m.group(0)
        other = "right" if word.lower() == "left" else "left"
        return other.capitalize() if word[0].isupper() else other

    return _LEFT_RIGHT.sub(swap, name)


def left_right_pairs(classes: Sequence[str]) -> dict[int, int]:
    """``{i: j}`` for every class i whose left/right-swapped name is another name, class j (symmetric).

    A name without a whole-word left/right is never paired, even when the label list repeats it (FineGym's
    Gym99 has two classes named "(BB) salto backward tucked").
    """
    index = {name: i for i, name in enumerate(classes)}
    pairs = {}
    for i, name in enumerate(classes):
        swapped = swap_left_right(name)
        j = index.get(swapped)
        if swapped != name and j is not None and j != i:
            pairs[i] = j
    return pairs
