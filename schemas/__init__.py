"""Message schemas: the ``.avsc`` files in ``schemas/avro`` are the source of truth.

- :mod:`schemas.codec` writes Avro single-object encoding (schema fingerprint) and reads with
  schema resolution;
- :mod:`schemas.models` holds the pydantic model of the JSON form agencies submit.
"""

from pathlib import Path

AVRO_DIR = Path(__file__).resolve().parent / "avro"

SIGNAL = "be.planr.Signal"
DELIVERY = "be.planr.Delivery"
ROUTING_DECISION = "be.planr.RoutingDecision"
DEAD_LETTER = "be.planr.DeadLetter"
