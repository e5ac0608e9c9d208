"""`python -m analysis.hessian ...`: one Hessian run (analysis.hessian.study)."""

import sys

from .study import main

sys.exit(main())
