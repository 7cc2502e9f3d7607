"""``python -m actors.cli``: the ``cmdist`` command."""

import sys

from actors.cli import main

sys.exit(main())
