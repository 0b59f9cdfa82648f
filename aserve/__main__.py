"""`python -m aserve` is the `aserve` command."""

import sys

from .cli import main

sys.exit(main())
