"""``make bench``: ``python -m benchmarks [NAME ...]`` prints each benchmark's figures.

Names: ``decisions`` (need-to-know decisions per second), ``signing`` (records signed and
checked per second, one signature per record versus per chunk), ``router`` (signals routed
per second on the embedded broker), ``projector`` (common-database projection per second).
Without a name, every benchmark runs, the cheapest first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from planr.telemetry import configure_logging


def _decisions() -> None:
    from benchmarks import decisions  # noqa: PLC0415 - import only what is asked for

    decisions.main()


def _signing() -> None:
    from benchmarks import signing  # noqa: PLC0415

    signing.main()


def _router() -> None:
    from benchmarks import router  # noqa: PLC0415

    router.main()


def _projector() -> None:
    from benchmarks import projector  # noqa: PLC0415

    projector.run()


BENCHMARKS: dict[str, Callable[[], None]] = {
    "decisions": _decisions,
    "signing": _signing,
    "router": _router,
    "projector": _projector,
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
