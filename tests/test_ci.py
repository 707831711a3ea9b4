""".ci/run runs the README's two set-up commands as the README writes them: a newcomer who
pastes them runs what CI runs (the test command's `--durations` included)."""

from __future__ import annotations

import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_setup_commands() -> list[list[str]]:
    """The commands of the README's "Set up and run, test" blocks, in order, each as its words
    (`a && b` is two commands)."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(
        "## Set up and run, test", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```bash\n")[1:]
    commands = []
    for block in blocks:
        for command in block.split("```", 1)[0].replace("\\\n", " ").split("&&"):
            if command.strip():
                commands.append(shlex.split(command))
    return commands


def ci_commands() -> list[list[str]]:
    """Every command line of .ci/run (comments and blank lines aside), `--quiet` dropped."""
    lines = (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    return [[word for word in shlex.split(line) if word != "--quiet"] for line in lines
            if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_the_readme_set_up_and_test_commands_in_order():
    readme = readme_setup_commands()
    # Both cores (a test file per worker), and the slowest tests shown at the end.
    assert ["pytest", "-n", "2", "--dist", "loadfile", "--durations=15"] in readme
    ci = ci_commands()
    position = 0
    for command in readme:
        if command == [".", ".venv/bin/activate"] and position > 0:
            continue  # the second block activates the environment the first one made
        assert command in ci[position:], f"{shlex.join(command)} is not in .ci/run (in order)"
        position = ci.index(command, position) + 1
    # The tests are what CI ends with, as the README's last command.
    assert ci[-1] == readme[-1]
