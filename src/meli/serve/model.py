"""What the server serves: a bundle loaded from a directory or fetched from the model registry,
with the version that names it.

This module is the server's one door into the rest of the package (loading a bundle, the error
type, the title length `meli predict` accepts): the HTTP side imports only from here.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meli.bundles.answers import NO_KNOBS, Knobs, answers_of, knob_problem, width
from meli.bundles.calibration import Calibration, load_calibration
from meli.bundles.classifier import Classifier
from meli.bundles.explain import DECOMPOSITION, MAX_WORDS, METHODS, category_id, default_method
from meli.bundles.explain import explain as explain_titles
from meli.bundles.load import load_classifier
from meli.bundles.predict import MAX_TITLE_CHARS
from meli.errors import MeliError

__all__ = ["MAX_TITLE_CHARS", "NO_KNOBS", "Knobs", "LoadedModel", "MeliError", "ModelSource",
           "answers_of", "bundle_hash", "knob_problem", "width"]

# Keys of a bundle's config.json that describe the file rather than the model.
_BOOKKEEPING = {"format_version", "meli_version", "architecture"}
WARM_UP_TITLES = ["zapatillas nike air max talle 42", "celular samsung galaxy a10 32gb"]


def bundle_hash(directory: Path) -> str:
    """SHA-256 of every file of a bundle (relative path and content, in path order): the same
    files give the same version on any machine, and any change to any file a new one."""
    digest = hashlib.sha256()
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    if not files:
        raise MeliError(f"{directory}: no model bundle there (an empty directory)")
    for path in files:
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass
class LoadedModel:
    """A classifier ready to score, and what /model tells about it."""

    classifier: Classifier
    name: str
    version: str  # "<registry version>+<hash>" from the registry, "<hash>" from a directory
    sha256: str
    source: dict[str, Any]
    loaded_seconds: float = 0.0
    _temporary: Path | None = field(default=None, repr=False)
    # What the bundle knows of its own confidence, and its sets (None: it carries none).
    calibration: Calibration | None = None

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    def top_k(self, titles: list[str], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.classifier.top_k(titles, k)

    # ---- explanations (meli.bundles.explain), for POST /explain ----------------------------
    explain_methods = METHODS
    explain_max_words = MAX_WORDS  # per title

    def explained_category(self, name: str) -> int:
        """The class id of a category name; MeliError naming the closest ones if unknown."""
        return category_id(self.classifier, name)

    def explanation_method(self, method: str | None) -> str:
        """`method`, or the bundle's own when None; MeliError when the bundle cannot run it."""
        own = default_method(self.classifier)
        if method == DECOMPOSITION and own != DECOMPOSITION:
            raise MeliError("the decomposition is exact for the linear model only; this model "
                            "is explained by occlusion")
        return method or own

    def explanations(self, titles: list[str], categories: np.ndarray,
                     method: str) -> list[dict[str, Any]]:
        """Each title's explanation toward its class id in `categories` (-1: its most
        probable), as `meli explain --json` writes it."""
        return [explanation.as_dict() for explanation in explain_titles(
            self.classifier, titles, method=method, categories=categories)]

    def describe(self) -> dict[str, Any]:
        config = self.classifier.config
        validation = {key: value for key, value in config.items() if "validation" in key
                      or key == "best_epoch"}
        params = {key: value for key, value in config.items()
                  if key not in _BOOKKEEPING and key not in validation}
        return {"name": self.name, "version": self.version, "sha256": self.sha256,
                "architecture": config.get("architecture"), "categories": len(self.labels),
                "source": self.source, "params": params, "validation": validation,
                "meli_version": config.get("meli_version"),
                "calibration": (self.calibration.describe() if self.calibration is not None
                                else None),
                "load_seconds": round(self.loaded_seconds, 3)}

    def discard(self) -> None:
        """Remove the files fetched for it (the weights stay in memory until it is dropped)."""
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None


@dataclass(frozen=True)
class ModelSource:
    """Where (re)loads read a bundle: a directory, or an artifact of a DVC/GTO registry."""

    directory: Path | None = None
    repository: str | None = None
    artifact: str | None = None
    rev: str | None = None  # a registered version (v1.0.0), as `dvc artifacts get --rev`
    stage: str | None = None
    device: str = "cpu"
    precision: str = "auto"

    def __post_init__(self):
        if (self.directory is None) == (self.artifact is None):
            raise MeliError("give a bundle directory (--model) or a registry artifact "
                            "(--artifact REPO NAME), one of them")
        if self.rev and self.stage:
            raise MeliError("--rev and --stage are exclusive: a stage names one version")

    def with_changes(self, **changes: Any) -> ModelSource:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return ModelSource(**(values | changes))

    def describe(self) -> dict[str, Any]:
        if self.directory is not None:
            return {"directory": str(self.directory)}
        return {"repository": self.repository, "artifact": self.artifact, "rev": self.rev,
                "stage": self.stage}

    def load(self) -> LoadedModel:
        """Fetch (for an artifact) and load the bundle, and score a few titles with it, so a
        model that loads but cannot predict fails here and not on a user's request."""
        import time

        started = time.perf_counter()
        if self.directory is not None:
            directory, temporary, registry = self.directory, None, {}
        else:
            directory, temporary, registry = self._fetch()
        try:
            classifier = load_classifier(directory, self.device, self.precision)
            calibration = load_calibration(classifier)
            sha256 = bundle_hash(directory)
            classifier.top_k(WARM_UP_TITLES, 3)
        except BaseException:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
            raise
        name = self.artifact or classifier.name
        version = sha256[:12]
        if registry.get("version"):
            version = f"{registry['version']}+{version}"
        return LoadedModel(classifier, name, version, sha256, self.describe() | registry,
                           time.perf_counter() - started, temporary, calibration)

    def _fetch(self) -> tuple[Path, Path, dict[str, Any]]:
        """Download the artifact with DVC's artifacts API (what `dvc artifacts get` does) into a
        temporary directory; the version GTO's tags give it, and the commit."""
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        assert self.repository is not None and self.artifact is not None
        temporary = Path(tempfile.mkdtemp(prefix=f"meli-serve-{self.artifact}-"))
        out = temporary / self.artifact
        try:
            with _DVC_LOCK, Repo.open(self.repository, subrepos=True,
                                      uninitialized=True) as repo:
                rev = repo.artifacts.get_rev(self.artifact, version=self.rev,
                                             stage=self.stage)
                # A stage's tag names no version: the one registered at its commit.
                version = self.rev or _version_at(repo, self.artifact, rev)
                repo.artifacts.download(self.artifact, version=self.rev, stage=self.stage,
                                        out=str(out))
        except DvcException as error:
            shutil.rmtree(temporary, ignore_errors=True)
            wanted = (f" version {self.rev}" if self.rev else
                      f" in stage {self.stage}" if self.stage else "")
            raise MeliError(f"{self.repository}: cannot fetch artifact {self.artifact}{wanted}: "
                            f"{_one_line(error)}") from None
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        return out, temporary, {"version": version, "commit": rev}


# DVC's repository objects are not meant to be used from several threads at once.
_DVC_LOCK = threading.Lock()


def _one_line(error: BaseException) -> str:
    messages = [str(error)]
    cause = error.__cause__
    while cause is not None:
        messages.append(str(cause))
        cause = cause.__cause__
    text = ": ".join(message for message in messages if message)
    return " ".join(text.split()) or type(error).__name__


def _registered(repo: Any, name: str) -> list[Any]:
    from gto.constants import Action
    from gto.tag import find, parse_tag

    return [parse_tag(tag) for tag in find(action=Action.REGISTER, name=name, scm=repo.scm)]


def _version_at(repo: Any, name: str, commit: str) -> str | None:
    """The latest version GTO registered at `commit` (a stage's tag names no version)."""
    tags = [tag for tag in _registered(repo, name) if tag.tag.target == commit]
    return max(tags, key=lambda tag: tag.created_at).version if tags else None

