"""The `meli` modules a command runs, read from the source's imports without running anything.

Every import counts, at module level or inside a function (a static reading cannot know which
branch runs), and importing `meli.a.b` runs `meli/__init__.py` and `meli/a/__init__.py` too.
Package data (non-Python files) inside a package whose `__init__.py` is in the closure counts
as read by it. `python tests/import_closure.py meli.stages.train` prints a stage's closure as
dvc.yaml deps lines; `python tests/import_closure.py --update dvc.yaml` rewrites every stage's
code deps to its closure.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "meli"


def module_file(name: str, src: Path = SRC) -> Path | None:
    """The file of module `name` under `src`, or None when it is not a module of the package."""
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = current.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imported_names(name: str, src: Path = SRC) -> set[str]:
    """Names of the package's modules that module `name` imports, directly."""
    path = module_file(name, src)
    assert path is not None, name
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, name, path.name == "__init__.py")
            # `from meli import sample` imports the module meli.data.sample, if there is one.
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == PACKAGE and module_file(target, src) is not None:
                found.add(target)
    return found


def with_parents(name: str) -> list[str]:
    """`meli.a.b` -> meli, meli.a, meli.a.b: importing a module runs its packages first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(entry: str, src: Path = SRC) -> set[Path]:
    """Every file of the package that `python -m <entry>` runs or reads, relative to the root."""
    seen: set[str] = set()
    pending = with_parents(entry)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for target in imported_names(name, src):
            pending += [parent for parent in with_parents(target) if parent not in seen]
    files = {module_file(name, src) for name in seen}
    data = {path for file in files if file is not None and file.name == "__init__.py"
            for path in file.parent.iterdir()
            if path.is_file() and path.suffix not in (".py", ".pyc")}
    root = src.parent
    return {path.relative_to(root) for path in (files | data) if path is not None}


def update_dvc_yaml(path: Path) -> None:
    """Rewrite the `src/` deps of every stage in `path` to its command's closure, leaving every
    other line as it is (the deps block must list data first, then code)."""
    import re

    output: list[str] = []
    entry, in_deps = None, False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        command = re.match(r"^    cmd: python -m (meli\.[\w.]+)", line)
        if command:
            entry = command.group(1)
        if in_deps and line.startswith("      - src/"):
            continue
        if in_deps and not line.startswith("      - "):
            assert entry is not None, f"{path}: a deps block comes before its cmd"
            output += [f"      - {file}\n" for file in sorted(map(str, closure(entry)))]
            in_deps = False
        in_deps = in_deps or line.rstrip() == "    deps:"
        output.append(line)
    path.write_text("".join(output), encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1] == "--update":
        update_dvc_yaml(Path(sys.argv[2]))
    else:
        for line in sorted(str(path) for path in closure(sys.argv[1])):
            print(f"      - {line}")
