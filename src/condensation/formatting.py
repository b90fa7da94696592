"""Text for numbers the library prints: one formatter each, shared by tables, reports and messages."""
from __future__ import annotations


def format_mean_std(mean: float, std: float, n: int, number=lambda value: f"{value:.2f}") -> str:
    """'mean ± std (n=N)', or 'mean (n=1)' for one value (a std over one value says nothing); ``number``
    formats each value."""
    if n == 1:
        return f"{number(mean)} (n=1)"
    return f"{number(mean)} ± {number(std)} (n={n})"
