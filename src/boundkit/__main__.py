"""``python -m boundkit``: the same as the ``boundkit`` command."""

import sys

from .cli import main

sys.exit(main())
