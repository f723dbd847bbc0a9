"""``python -m dashboards.generate``: see the package docstring."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
