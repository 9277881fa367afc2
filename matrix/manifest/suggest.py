"""'Did you mean' hints for misspelt keys and names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`", did you mean 'x'?"` for the closest choice, or "" when nothing is close."""
    options = [choice for choice in choices if choice != word]
    # Case differences alone (`SM86`, `Ampere-Plus`) are the commonest slip; difflib scores
    # them poorly, so compare folded first.
    folded = {choice.casefold(): choice for choice in options}
    if word.casefold() in folded:
        return f", did you mean {folded[word.casefold()]!r}?"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f", did you mean {close[0]!r}?" if close else ""
