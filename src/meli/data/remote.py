"""`meli pull`: `dvc pull` that changes the workspace only when every object arrived intact.

`dvc pull` checks out whatever it fetched: an object corrupted in remote storage is checked out
as is (or, with the remote's `verify` option, its output is removed from the workspace). Here the
objects are fetched first (`dvc fetch`), each object this pull downloaded is hashed, corrupted
ones are dropped from the cache, and `dvc checkout` runs only when every object that dvc.lock
asks for is present and intact. Otherwise the workspace keeps what it had, and one line says
which outputs are affected.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from meli.errors import MeliError
from meli.experiments.git_dvc import dvc, run_command


@dataclass
class PullResult:
    objects: int
    downloaded: int


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _object_path(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def _objects_in(cache: Path) -> set[Path]:
    root = cache / "files" / "md5"
    return set(root.glob("*/*")) if root.exists() else set()


def cached_outputs(lock_path: Path = Path("dvc.lock")) -> dict[str, str]:
    """{output path: md5} of the outputs dvc.lock records that live in the DVC cache.

    Outputs declared `cache: false` (metrics, plots) are committed to git instead; they are
    told apart by git tracking them.
    """
    if not lock_path.exists():
        raise MeliError(f"{lock_path}: not found; nothing to pull")
    lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    outputs = {out["path"]: out["md5"] for stage in (lock.get("stages") or {}).values()
               for out in stage.get("outs") or [] if "md5" in out}
    tracked = run_command(["git", "ls-files", "--", *outputs], check=False).stdout.splitlines()
    in_git = {path for path in outputs
              if any(file == path or file.startswith(f"{path}/") for file in tracked)}
    return {path: md5 for path, md5 in outputs.items() if path not in in_git}


def pull(remote: str | None = None, jobs: int | None = None) -> PullResult:
    """Fetch every cached output of dvc.lock, verify what was downloaded, then check out."""
    cache = Path(dvc("cache", "dir").stdout.strip())
    outputs = cached_outputs()
    before = _objects_in(cache)
    options = [*(["-r", remote] if remote else []), *(["-j", str(jobs)] if jobs else [])]
    fetched = dvc("fetch", *options, check=False)
    needed: dict[str, str] = {}  # object md5 -> the output it belongs to
    # One object can serve several outputs (the ensemble bundle holds copies of its members):
    # each is judged once, and every output that uses it shares the verdict.
    verdicts: dict[str, str] = {}
    problems: dict[str, set[str]] = {"corrupted": set(), "missing": set()}
    explained = {"corrupted": "corrupted in remote storage",
                 # With the remote's `verify` option DVC itself drops a corrupted download.
                 "missing": "not fetched (absent from the remote, or refused as corrupted)"}
    downloaded = 0
    pending = list(outputs.items())
    while pending:
        output, md5 = pending.pop()
        if md5 in verdicts:
            if verdicts[md5] in problems:
                problems[verdicts[md5]].add(output)
            continue
        needed[md5] = output
        path = _object_path(cache, md5)
        verdicts[md5] = "intact"
        if not path.exists():
            verdicts[md5] = "missing"
            problems["missing"].add(output)
            continue
        if path not in before:
            downloaded += 1
            if _md5_of(path) != md5.removesuffix(".dir"):
                path.unlink()  # never let a later checkout use it
                verdicts[md5] = "corrupted"
                problems["corrupted"].add(output)
                continue
        if md5.endswith(".dir"):
            listing = json.loads(path.read_text(encoding="utf-8"))
            pending += [(f"{output}/{entry['relpath']}", entry["md5"]) for entry in listing]
    if problems["corrupted"] or problems["missing"]:
        found = "; ".join(f"{explained[kind]}: {', '.join(sorted(paths)[:5])}"
                          + (" ..." if len(paths) > 5 else "")
                          for kind, paths in problems.items() if paths)
        hint = (fetched.stderr or fetched.stdout).strip().splitlines()
        detail = f" (dvc fetch: {hint[-1]})" if fetched.returncode and hint else ""
        raise MeliError(f"remote objects not intact, workspace left unchanged: {found}{detail}")
    dvc("checkout")
    return PullResult(len(needed), downloaded)
