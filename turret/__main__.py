"""`python -m turret` is the `turret` command."""

import sys

from turret.cli import main

sys.exit(main())
