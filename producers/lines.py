"""Read signals in the JSON form, one per line, as an agency back-end submits them."""

from __future__ import annotations

from pydantic import ValidationError

from planr.domain import Agency
from schemas.models import SignalIn, describe_errors


def parse_signal_lines(lines: list[str], agency: Agency) -> tuple[list[SignalIn], list[str]]:
    """The valid signals, and one error per invalid line: its number and the field names that
    are wrong, never the values (they may be content). Blank lines are skipped."""
    numbered, errors = parse_numbered_signal_lines(lines, agency)
    return [s for _, s in numbered], errors


def parse_numbered_signal_lines(
    lines: list[str], agency: Agency
) -> tuple[list[tuple[int, SignalIn]], list[str]]:
    """As :func:`parse_signal_lines`, each valid signal with its line number (from 1)."""
    good: list[tuple[int, SignalIn]] = []
    errors: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            s = SignalIn.model_validate_json(line)
        except ValidationError as exc:
            errors.append(f"line {number}: {describe_errors(exc)}")
            continue
        if s.agency is not None and s.agency is not agency:
            errors.append(f"line {number}: agency: does not match --agency {agency.value}")
            continue
        good.append((number, s))
    return good, errors
