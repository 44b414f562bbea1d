"""``python -m ptychopinn.cli``."""

import sys

from ptychopinn.cli import main

sys.exit(main())
