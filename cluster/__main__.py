"""``python -m cluster``: the orchestrator's command line (see cluster/orchestrator.py)."""

import sys

from cluster.orchestrator import main

sys.exit(main())
