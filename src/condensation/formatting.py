"""Text for numbers the library prints: one formatter each, shared by tables, reports and messages."""
from __future__ import annotations


def format_mean_std(mean: float, std: float, n: int, number=lambda value: f"{value:.2f}") -> str:
    """'mean ± std (n=N)', or 'mean (n=1)' for one value (a std over one value says nothing); ``number``
    formats each value."""
    if n == 1:
        return f"{number(mean)} (n=1)"
    return f"{number(mean)} ± {number(std)} (n={n})"


# one colour per series, in the same order in every plot and report (matplotlib's tab10)
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7",
           "#bab0ac")
