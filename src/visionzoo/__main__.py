"""`python -m visionzoo` (and `torchrun -m visionzoo train ...`): the `visionzoo` command."""

import sys

from visionzoo.cli import main

sys.exit(main())
