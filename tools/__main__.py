"""``python -m tools``: the ``polyspec`` command."""

import sys

from tools.main import main

sys.exit(main())
