import sys

from visionzoo.cli import main

sys.exit(main())
