"""``python -m gan_assets.demo``: the demo's command line (see gan_assets.demo.cli)."""

import sys

from gan_assets.demo.cli import main

sys.exit(main())
