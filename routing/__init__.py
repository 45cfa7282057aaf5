"""Need-to-know routing: the policy (data, in ``policy.yaml``), the decision engine, the
minimised views and the routing consumer."""
