"""``python -m worker``: one worker process, configured from the environment."""

import sys

from common.errors import TagstreamError
from worker.app import main

try:
    sys.exit(main())
except TagstreamError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
