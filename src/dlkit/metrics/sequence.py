"""Sequence-generation metrics (Notes: 003 §9, 002 §3.1: a generated sequence is read up to its <EOS>)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError


def exact_match(guesses: Sequence, truths: Sequence) -> float:
    """Fraction of generated sequences equal to their targets as a whole (every token right, ending where the
    target ends): mean_i [guess_i == truth_i]. Items are strings or token lists; 0 targets give 0.0."""
    if len(guesses) != len(truths):
        raise ConfigError(f"exact_match needs one guess per target; got {len(guesses)} guesses and "
                          f"{len(truths)} targets")
    return sum(g == t for g, t in zip(guesses, truths)) / max(len(truths), 1)
