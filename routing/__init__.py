"""Need-to-know routing: the policy (data, in ``policy.yaml``), the decision engine, the
minimised views, policy comparison, the routing consumer and the NTF aggregator."""

from pathlib import Path

#: The shipped, reviewed need-to-know policy.
DEFAULT_POLICY = Path(__file__).resolve().parent / "policy.yaml"
