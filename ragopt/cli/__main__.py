"""``python -m ragopt.cli``: the ``ragopt`` command."""

import sys

from ragopt.cli import main

sys.exit(main())
