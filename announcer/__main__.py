"""`python -m announcer`: the same as the announcer console script."""

import sys

from announcer.cli import main

sys.exit(main())
