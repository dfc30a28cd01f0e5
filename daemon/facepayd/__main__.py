"""python -m facepayd."""

import sys

from facepayd.main import main

sys.exit(main())
