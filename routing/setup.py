"""Load a policy file and build everything that routes with it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from routing.engine import Engine
from routing.policy import Policy
from routing.views import Views
from schemas.codec import Codec


@dataclass(frozen=True)
class RoutingSetup:
    policy: Policy
    engine: Engine
    views: Views
    codec: Codec


def prepare(policy_path: Path, codec: Codec | None = None) -> RoutingSetup:
    """Validate the policy (and its views against their schemas); PolicyError if invalid."""
    codec = codec or Codec()
    policy = Policy.load(policy_path)
    return RoutingSetup(policy, Engine(policy), Views(policy, codec), codec)
