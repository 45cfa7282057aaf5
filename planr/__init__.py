"""planr-bus shared kernel: settings, errors, Kafka clients, telemetry, the embedded broker,
territory reference data and the command-line interface.

A signal travels ``producers -> schemas -> routing -> consumers``; everything those packages
share lives here and nowhere else.
"""

__version__ = "0.1.0"
