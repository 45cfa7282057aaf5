"""Helpers for the tests of the policy file: mutate the shipped policy, read the errors."""

from __future__ import annotations

import re

import pytest

from planr.errors import PolicyError
from routing.policy import Policy


def mutate(text: str, old: str, new: str, marker: str | None = None) -> tuple[str, int]:
    """Replace the first ``old`` by ``new``; return the text and the line of ``marker`` (a
    word of ``new``; by default, its first line)."""
    at = text.index(old)  # ValueError here means the shipped policy changed: update the anchor
    offset = new.index(marker) if marker is not None else 0
    line = text.count("\n", 0, at) + new.count("\n", 0, offset) + 1
    return text[:at] + new + text[at + len(old) :], line


def rejected(text: str) -> str:
    """The error message of loading ``text``, which must be refused."""
    with pytest.raises(PolicyError) as info:
        Policy.from_text(text, "policy.yaml")
    return str(info.value)


def lines_named(message: str) -> set[int]:
    return {int(n) for n in re.findall(r"line (\d+)", message)}
