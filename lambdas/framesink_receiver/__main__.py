"""`python -m framesink_receiver`: the container's command."""

import sys

from .server import main

sys.exit(main())
