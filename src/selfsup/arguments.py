"""argparse types for numbers with a range: a command-line value out of range is refused where
it is read, in argparse's one-line form naming the option, instead of failing later deep
inside (a zero image size, zero training steps, a negative weight decay)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def ranged(kind: type, low: float, low_inclusive: bool = True, high: float | None = None):
    """An argparse type: `kind` (int or float) within [low or (low, ... high]."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if value < low or (value == low and not low_inclusive):
            bound = f">= {low}" if low_inclusive else f"> {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} range"  # argparse names the type in its messages
    return parse


positive_int: Callable[[str], int] = ranged(int, 1)
non_negative_int: Callable[[str], int] = ranged(int, 0)
positive_float: Callable[[str], float] = ranged(float, 0.0, low_inclusive=False)
non_negative_float: Callable[[str], float] = ranged(float, 0.0)
fraction: Callable[[str], float] = ranged(float, 0.0, low_inclusive=False, high=1.0)
