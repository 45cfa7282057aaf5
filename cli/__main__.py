"""``python -m cli``: the ``planr`` command (how ``planr route --workers N`` starts its workers)."""

from cli import main

main()
