"""Find a trained model's files: a version folder written by ``training/train.py`` (``policy/``,
``classifier/``, ``manifest.json``), a model folder whose ``champion.json`` names the current version, a bare
policy folder, or an MLflow registry URI (``models:/learned-router@champion``)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from learned_router.errors import ConfigError

__all__ = ["ModelFiles", "resolve_model"]

POLICY_STATE = "policy_state.json"
POLICY_MANIFEST = "policy_manifest.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelFiles:
    policy_dir: Path
    classifier_dir: Path | None
    version_dir: Path
    problem: str | None = None  # why nothing usable is there, when the reason is known


def _default_tracking_uri() -> str:
    root = Path(__file__).resolve().parent.parent
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def resolve_model(path: str, *, tracking_uri: str | None = None, key: str = "routing.model_path") -> ModelFiles:
    """Resolve ``path`` to the policy and classifier folders. When nothing usable is there, the result says
    why in ``problem`` when that is known (an unpromoted model folder, a registry URI that resolves to
    nothing), and loading the policy from it fails otherwise: either way the rules route.

    Raises:
        ConfigError: a registry URI without the source checkout's ``training/`` package, or an unreadable
            ``champion.json``.
    """
    if path.startswith("models:/"):
        try:
            from training.tracking import resolve_model_uri
        except ModuleNotFoundError as exc:
            raise ConfigError(key, f"resolving {path} needs the source checkout's training/ package") from exc
        try:
            local = resolve_model_uri(path, tracking_uri=tracking_uri or _default_tracking_uri())
        except FileNotFoundError as exc:
            # as for a model folder with no champion (no version promoted yet is a normal state of the
            # learning loop): the rules route and every decision's fallback_reason says why
            return ModelFiles(Path(path), None, Path(path), problem=str(exc))
        return resolve_model(str(local), key=key)
    p = Path(path)
    if (p / "champion.json").is_file():
        try:
            version = json.loads((p / "champion.json").read_text())["version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(key, f"{p / 'champion.json'} is unreadable: {exc}") from None
        return resolve_model(str(p / str(version)), key=key)
    if (p / "policy" / POLICY_STATE).is_file():
        classifier = p / "classifier"
        usable = classifier.is_dir() and _policy_reads(classifier, p / "policy")
        return ModelFiles(p / "policy", classifier if usable else None, p)
    if (p / POLICY_STATE).is_file():
        return ModelFiles(p, None, p)
    # Not a usable model: the learned policy reports the problem and the rules route (never a failed request).
    versions = sorted(v.name for v in p.glob("v[0-9]*") if (v / "manifest.json").is_file()) if p.is_dir() else []
    if versions:
        return ModelFiles(p, None, p, problem=(
            f"{p} has no champion: training promoted none of its versions ({', '.join(versions)}); serve a "
            f"version folder such as {p / versions[-1]} to use it anyway"))
    return ModelFiles(p, None, p)


def _policy_reads(classifier: Path, policy: Path) -> bool:
    """Whether the policy's task features are all classes of the refitted classifier beside it.

    Training fits the policy on the task probabilities logged with each decision (usually from the shipped
    classifier) and refits the classifier on the logged task labels, which may be fewer classes. Served with
    that classifier, such a policy would read zeros for every class it lacks; the router then keeps the
    classifier the logs came from. Unreadable files pass here: loading them reports the problem."""
    try:
        classes = {str(c) for c in json.loads((classifier / "manifest.json").read_text())["labels"]}
        manifest = policy / POLICY_MANIFEST
        listed = json.loads(manifest.read_text()).get("task_labels") if manifest.is_file() else None
        if listed is None:  # saved before the manifest listed them: read the (larger) state
            state = json.loads((policy / POLICY_STATE).read_text())
            listed = (state.get("transform") or {}).get("task_labels")
        wanted = {str(t) for t in listed or ()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return True
    if wanted <= classes:
        return True
    log.warning("%s is not used: the policy in %s reads task classes it does not predict (%s); the shipped "
                "classifier for the embedder serves instead, if there is one", classifier, policy,
                ", ".join(sorted(wanted - classes)[:5]))
    return False
