"""The one exception type a user is meant to see, and how every command ends with it: one line
on stderr and a non-zero exit, never a traceback.

Each stage module (`python -m meli.stages.<name>`, the form dvc.yaml runs) and the `meli`
command for people go through `run`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from meli.layout import PARAMS_FILE


class MeliError(Exception):
    """A problem with the user's input, data or params.

    The CLI prints its message as a single line and exits non-zero; the message names the file,
    line or key that is wrong, so no traceback is needed to act on it.
    """



def stage_parser(stage: str, description: str | None) -> argparse.ArgumentParser:
    """The argument parser of a pipeline stage: `--params` and whatever the stage adds."""
    summary = (description or "").strip().splitlines()[0] if description else None
    parser = argparse.ArgumentParser(prog=f"python -m meli.stages.{stage}", description=summary)
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: %(default)s)")
    return parser


def run(name: str, action: Callable[[], None]) -> int:
    """Run `action` as the command `name`; return the process exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        action()
    except MeliError as error:
        print(f"meli {name}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"meli {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    return 0
