"""`python -m collector` runs the CLI."""

import sys

from collector.cli import main

sys.exit(main())
