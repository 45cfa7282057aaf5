"""Governance of the common database: access modes per service, OCAM's prerogatives.

The access modes come from a reviewed file (``consumers/ftf/access.yaml``), not from code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from planr.domain import Agency
from planr.errors import UsageError

DEFAULT_ACCESS_FILE = Path(__file__).resolve().parent / "access.yaml"

#: The service that includes, removes and grades subjects.
MANAGER = Agency.OCAM


class AccessMode(StrEnum):
    CONSULT_AND_FEED = "consult_and_feed"
    CONSULT = "consult"
    HIT_NO_HIT = "hit_no_hit"
    INDIRECT = "indirect"
    NONE = "none"

    @property
    def feeds(self) -> bool:
        return self is AccessMode.CONSULT_AND_FEED

    @property
    def reads_fiches(self) -> bool:
        return self in (AccessMode.CONSULT_AND_FEED, AccessMode.CONSULT)


class _AccessFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    services: dict[Agency, AccessMode]


@dataclass(frozen=True)
class AccessConfig:
    """Each service's access mode; services not listed have none."""

    modes: Mapping[Agency, AccessMode] = field(default_factory=dict)
    source: str = "<memory>"

    def mode(self, service: Agency | str) -> AccessMode:
        try:
            return self.modes.get(Agency(service), AccessMode.NONE)
        except ValueError:
            return AccessMode.NONE

    @classmethod
    def load(cls, path: Path) -> AccessConfig:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read access file {path}: {exc.strerror}") from None
        except yaml.YAMLError:
            raise UsageError(f"access file {path} is not valid YAML") from None
        try:
            parsed = _AccessFile.model_validate(raw)
        except ValidationError as exc:
            where = "; ".join(
                ".".join(str(p) for p in e["loc"]) + ": " + str(e["msg"])
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise UsageError(f"access file {path}: {where}") from None
        modes = dict(parsed.services)
        if modes.get(MANAGER, AccessMode.CONSULT_AND_FEED) is not AccessMode.CONSULT_AND_FEED:
            raise UsageError(f"access file {path}: {MANAGER.value} manages the database and "
                             "must have consult_and_feed")
        modes[MANAGER] = AccessMode.CONSULT_AND_FEED
        return cls(modes, str(path))
