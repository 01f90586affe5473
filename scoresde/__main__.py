"""``python -m scoresde ...`` (and ``torchrun -m scoresde generate ...``) runs the CLI."""

import sys

from scoresde.commands.cli import main

sys.exit(main())
