"""Message schemas: the ``.avsc`` files in ``schemas/avro`` are the source of truth.

- :mod:`schemas.names` names every record schema;
- :mod:`schemas.codec` writes Avro single-object encoding (schema fingerprint) and reads with
  schema resolution;
- :mod:`schemas.models` holds the pydantic model of the JSON form agencies submit;
- :mod:`schemas.dead_letter` builds the record of something that could not be processed.
"""

from pathlib import Path

AVRO_DIR = Path(__file__).resolve().parent / "avro"
