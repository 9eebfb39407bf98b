import sys

from sarbridge.app.cli import main

sys.exit(main())
