"""``python -m glora`` (and ``torchrun -m glora``) runs the ``glora`` command."""

import sys

from glora.cli.main import main

sys.exit(main())
