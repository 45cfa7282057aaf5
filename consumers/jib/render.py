"""How JIB consultations are shown: text for people, JSON lines for programs.

The answers for an unknown proposal or person are fixed texts: a party without access gets
exactly them (see :mod:`consumers.jib.consult`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _text(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, list):
        return ",".join(value) or "-"
    return "-" if value is None else str(value)


def _show(item: dict[str, Any]) -> str:
    lines = [f"{k}: {_text(v)}" for k, v in item.items() if k not in ("grounds", "votes")]
    lines.append("grounds:")
    lines.extend(f"  {line}" for line in str(item["grounds"]).splitlines())
    lines.append(f"votes: {len(item['votes'])}")
    for v in item["votes"]:
        reason = f"  reason: {v['reason']}" if v["reason"] is not None else ""
        lines.append(f"  {_text(v['cast_at'])}  {v['service']:<7} {v['choice']:<8} "
                     f"{v['status']:<17}{reason}")
    return "".join(line + "\n" for line in lines)


def _line(verb: str, item: dict[str, Any]) -> str:
    if verb == "members":
        return (f"{item['subject_id']:<16} {item['arrondissement']:<16} "
                f"since {_text(item['since'])}  proposal {item['proposal_id']}")
    return (f"{item['proposal_id']}  {item['proposer']:<20} {item['action']:<6} "
            f"{item['subject_id']:<16} {item['state']:<8} deadline {_text(item['deadline'])}")


def render(verb: str, target: str | None, answer_class: str, items: Sequence[dict[str, Any]],
           *, as_json: bool) -> tuple[str, int]:
    """(stdout text, exit code) of an answer; ``unknown`` exits 1."""
    if answer_class == "unknown":
        if as_json:
            key = "proposal_id" if verb == "show" else "subject_id"
            return json.dumps({key: target, "answer": "unknown"}) + "\n", 1
        return ("no such proposal\n" if verb == "show" else "not a member\n"), 1
    if verb == "show":
        item = items[0]
        if as_json:
            return json.dumps({"answer": "proposal", **_plain(item)}, ensure_ascii=False) + "\n", 0
        return _show(item), 0
    if as_json:
        return "".join(json.dumps(_plain(i), ensure_ascii=False) + "\n" for i in items), 0
    return "".join(_line(verb, i) + "\n" for i in items), 0
