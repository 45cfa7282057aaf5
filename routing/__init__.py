"""Need-to-know routing: the policy (data, in ``policy.yaml``), the decision engine, the
minimised views, policy comparison and the routing consumer (which writes the facts that the
NTF aggregator, in ``consumers.ntf``, counts)."""

from pathlib import Path

#: The shipped, reviewed need-to-know policy.
DEFAULT_POLICY = Path(__file__).resolve().parent / "policy.yaml"
