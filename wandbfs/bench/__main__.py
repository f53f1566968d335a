"""``python -m wandbfs.bench [options]``: see ``--help`` and docs/bench.md."""

import sys

from wandbfs.bench.runner import main

sys.exit(main())
