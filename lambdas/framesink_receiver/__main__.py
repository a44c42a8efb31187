"""`python -m framesink_receiver`: the container's command."""

import sys

from framesink_receiver.main import main

sys.exit(main())
