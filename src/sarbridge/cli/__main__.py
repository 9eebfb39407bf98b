import sys

from sarbridge.cli import main

sys.exit(main())
