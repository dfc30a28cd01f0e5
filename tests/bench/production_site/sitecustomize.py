"""The bench's daemon child imports as a production install would: dev-only packages absent.

httpx imports click, rich and pygments when they are installed (for its command line) and
structlog imports rich (for pretty tracebacks); in the development venv they are, because
pytest and import-linter need them, and they add ≈5 MB to the daemon's RSS. A production
install (`pip install facepay-terminal`, no extras) has none of them. tests/bench/run.py names
every top-level module that no runtime dependency provides in FACEPAY_BENCH_ABSENT; importing
one raises ImportError here, as it would there.
"""

import os
import sys

for _name in filter(None, os.environ.get("FACEPAY_BENCH_ABSENT", "").split(",")):
    sys.modules[_name] = None  # type: ignore[assignment]
