"""``python -m cli`` (and ``torchrun -m cli train ...`` for several GPUs)."""

import sys

from .main import main

sys.exit(main())
