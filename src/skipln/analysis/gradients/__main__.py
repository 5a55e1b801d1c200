"""``python -m skipln.analysis.gradients``: run the gradient study's command (:func:`skipln.analysis.gradients.cli.main`)."""

import sys

from skipln.analysis.gradients.cli import main

sys.exit(main())
