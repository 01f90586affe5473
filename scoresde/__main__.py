"""``python -m scoresde ...`` (and ``torchrun -m scoresde generate ...``) runs the CLI."""

import sys

from scoresde.cli import main

sys.exit(main())
