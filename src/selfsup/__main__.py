"""`python -m selfsup` (and `torchrun -m selfsup`) run the command line."""

import sys

from selfsup.cli import main

sys.exit(main())
