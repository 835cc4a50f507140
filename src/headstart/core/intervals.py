"""Confidence intervals of the rates headstart reports (accuracy, recall, specificity, precision)."""

from __future__ import annotations

import math

Z95 = 1.959964  # the standard normal's 97.5th percentile: a two-sided 95 % interval


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the rate ``hits / n`` (95 % by default): unlike the normal approximation, it
    stays inside [0, 1] and is not empty at 0 or n hits, which small validation splits give. (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
