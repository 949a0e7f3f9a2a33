"""``python -m gadgets.replay``: the same as ``pogmdm-recon``."""

import sys

from gadgets.replay.cli import main

sys.exit(main())
