"""``python -m sarbridge``: the command line (the same as the ``sarbridge`` script)."""

from sarbridge.app.cli import main

raise SystemExit(main())
