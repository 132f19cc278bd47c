"""`python -m seeds`: the same as `marketplace seed`."""

from __future__ import annotations

import sys

from seeds.seed import main

if __name__ == "__main__":
    sys.exit(main())
