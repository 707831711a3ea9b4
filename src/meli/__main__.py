"""`python -m meli <command>`: the same as the `meli` command (dvc.yaml runs each stage through
its own module instead, `python -m meli.stages.<name>`, so that its deps are its own code)."""

import sys

from meli.cli import main

sys.exit(main())
