"""``python -m medclip.cli`` (what torchrun launches)."""

import sys

from medclip.cli import main

sys.exit(main())
