"""``make bench``: ``python -m benchmarks [NAME ...]`` prints each benchmark's figures.

Names: ``decisions`` (need-to-know decisions per second), ``router`` (signals routed per
second on the embedded broker), ``projector`` (common-database projection per second),
``inboxes`` (deliveries stored in the durable inboxes per second).
Without a name, every benchmark runs, the cheapest first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from planr.telemetry import configure_logging


def _decisions() -> None:
    from benchmarks import decisions  # noqa: PLC0415 - import only what is asked for

    decisions.main()


def _router() -> None:
    from benchmarks import router  # noqa: PLC0415

    router.main()


def _projector() -> None:
    from benchmarks import projector  # noqa: PLC0415

    projector.run()


def _inboxes() -> None:
    from benchmarks import inboxes  # noqa: PLC0415

    inboxes.run()


BENCHMARKS: dict[str, Callable[[], None]] = {
    "decisions": _decisions,
    "router": _router,
    "projector": _projector,
    "inboxes": _inboxes,
}


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    configure_logging("console", "warning")  # figures, not the components' chatter
    for name in names or list(BENCHMARKS):
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
