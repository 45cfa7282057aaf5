"""The parties of the Joint Information Box (JIB): the services and the local taskforces.

A party id is either a service's agency id (``vsse``) or a local taskforce's recipient id
(``tfl:<arrondissement>``, e.g. ``tfl:brussel``). Services propose, vote and read; a local
taskforce proposes and reads. The same ids own signing keys (:mod:`planr.keyfiles` allows the
``:``) and name the JIB's delivery topics (:mod:`planr.topics`).
"""

from __future__ import annotations

from functools import cache
from typing import Final

from planr import territory
from planr.domain import Agency
from planr.errors import UsageError

TFL_PREFIX: Final = "tfl:"
#: Owner of the signing key of the JIB's consensus process (its ticks and its outputs).
JIB_OWNER: Final = "jib"


def is_tfl(party: str) -> bool:
    return party.startswith(TFL_PREFIX)


def tfl_of(arrondissement: str) -> str:
    return TFL_PREFIX + arrondissement


def arrondissement_of_tfl(party: str) -> str:
    """``tfl:brussel`` -> ``brussel``; UsageError for anything else."""
    if not is_tfl(party) or party.removeprefix(TFL_PREFIX) not in territory.arrondissement_ids():
        raise UsageError("not a local taskforce id (tfl:<arrondissement>)")
    return party.removeprefix(TFL_PREFIX)


def parse_party(text: str) -> str:
    """A valid party id (an agency id, or ``tfl:<arrondissement>``), or UsageError. The
    message never repeats the text."""
    if is_tfl(text):
        arrondissement_of_tfl(text)
        return text
    try:
        return Agency(text).value
    except ValueError:
        raise UsageError("not a party of the JIB: an agency id or tfl:<arrondissement>"
                         ) from None


def is_party(text: str) -> bool:
    try:
        parse_party(text)
    except UsageError:
        return False
    return True


@cache
def all_parties() -> tuple[str, ...]:
    """Every service (14), then every local taskforce (12)."""
    return (*(a.value for a in Agency),
            *(tfl_of(a) for a in territory.arrondissement_ids()))
