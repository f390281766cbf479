"""``make gpu-check``: see :mod:`infra.gpu_check`."""

import sys

from infra.gpu_check.cli import main

sys.exit(main())
