import sys

from .sighup import hold_sighup

hold_sighup()  # before the heavy imports below: a SIGHUP during the start must not end it (sighup.py)

from .cli import main  # noqa: E402

sys.exit(main())
