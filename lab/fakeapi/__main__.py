"""`python -m lab.fakeapi`: the stand-in API server on the command line."""

import sys

from lab.fakeapi.cli import main

sys.exit(main())
