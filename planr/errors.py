"""One exception root for planr-bus.

Errors carry attributes (``retriable``, ``reason``) rather than forming deep ``isinstance``
trees. Messages carry ids and labels only, never signal content or key material.
"""

from __future__ import annotations


class PlanrError(Exception):
    """Root of every error raised by planr-bus.

    ``reason`` is a short machine label (used as a metric label and dead-letter reason);
    ``retriable`` says whether trying the same operation again may succeed.
    """

    reason: str = "error"
    retriable: bool = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class UsageError(PlanrError, ValueError):
    """The caller passed something invalid (bad input line, bad policy file, bad option)."""

    reason = "usage"


class DecodeError(PlanrError, ValueError):
    """Bytes that cannot be read as a known Avro message."""

    reason = "undecodable"


class UnknownSchemaError(DecodeError):
    """The message names a writer schema (fingerprint) that this reader does not know."""

    reason = "unknown_schema"


class InvalidSignalError(PlanrError, ValueError):
    """A decoded signal that breaks the contract (unknown location, agency mismatch, ...).

    ``field`` is the dotted path of the offending field (``subject.id``, ``named_recipients.2``)
    when one is known; like the message, it never carries the field's value.
    """

    reason = "invalid_signal"
    field: str | None = None

    def __init__(
        self, message: str, *, reason: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.field = field


class PolicyError(UsageError):
    """A policy file that does not validate; the message names the place in the file."""

    reason = "policy"


class BrokerError(PlanrError, RuntimeError):
    """The embedded broker could not be started or did not answer."""

    reason = "broker"
    retriable = True


class DeliveryError(PlanrError, RuntimeError):
    """An output was not acknowledged by the broker; offsets covering it are not committed."""

    reason = "delivery"
    retriable = True


class SchemaError(PlanrError, ValueError):
    """A schema file that is not one named Avro record schema."""

    reason = "schema"


class EncodeError(PlanrError, ValueError):
    """A record that does not fit the schema it is written with (a field name says where)."""

    reason = "unencodable"


class TopicError(PlanrError, RuntimeError):
    """The broker refused to create a topic the bus needs."""

    reason = "topics"


class TopicsMissingError(TopicError):
    """Topics a service consumes do not exist (yet): ``planr topics provision`` creates them.
    Retriable: a service started before the provisioning waits for them."""

    reason = "topics_missing"
    retriable = True


class StoreError(PlanrError, RuntimeError):
    """The store (SQLite or PostgreSQL) is unreachable, or was used before ``start()``."""

    reason = "store"
    retriable = True
