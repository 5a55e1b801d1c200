import sys

from skipln.sweep.cli import main

sys.exit(main())
