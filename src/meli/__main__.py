"""`python -m meli <command>`, the form every dvc.yaml stage uses."""

import sys

from meli.cli import main

sys.exit(main())
