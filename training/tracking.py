"""MLflow tracking and the model registry: the only module that imports mlflow (always lazily).

* :class:`MlflowTracker` logs a training run (params, metrics, artifacts), registers each trained version
  as a ``pyfunc`` logged model wrapping the model folder (``mlflow.register_model`` needs a logged model),
  and moves the ``champion`` alias when the promotion gate allows it.
* :class:`NullTracker` does nothing (``--no-tracking``).
* :func:`promotion_decision` is the gate: promote only when the new version's lower confidence bound
  beats the champion's estimate and the observed value of the logged traffic.
* :func:`resolve_model_uri` turns ``models:/learned-router@champion`` (or any models:/ URI) into a local
  folder the router can load.

The default tracking store is ``sqlite:///<project>/mlflow.db``: no server needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CHAMPION", "MlflowTracker", "NullTracker", "default_tracking_uri", "promotion_decision",
           "resolve_model_uri"]

CHAMPION = "champion"
MODEL_DIR_KEY = "model_dir"


def default_tracking_uri(project_root: str | Path) -> str:
    return f"sqlite:///{Path(project_root).resolve() / 'mlflow.db'}"


def _artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a SQLite tracking database (``<db folder>/mlartifacts``), not in the working folder."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


def promotion_decision(new_lcb: float | None, champion_estimate: float | None, *,
                       serving_value: float | None = None, min_improvement: float = 0.0) -> tuple[bool, str]:
    """Whether a new version replaces the champion, and why.

    The new version's lower confidence bound must beat every baseline there is: the champion's estimate on
    the same traffic and the observed value of the policy that served that traffic. Without the second, the
    first version trained on a log would be promoted however it compares with the rules that wrote the log.

    Args:
        new_lcb: the lower confidence bound of the new version's estimated value (higher is better).
        champion_estimate: the champion's estimated value on the same traffic (None: no champion yet).
        serving_value: the observed value of the logged traffic (None: not known).
        min_improvement: a margin the bound must clear.
    """
    if new_lcb is None or new_lcb != new_lcb:
        return False, "the new version has no usable off-policy estimate"
    baselines = [(v, name) for v, name in ((champion_estimate, "the champion's"),
                                          (serving_value, "the logged traffic's observed"))
                 if v is not None and v == v]
    if not baselines:
        return True, "no champion yet"
    value, name = max(baselines)
    if new_lcb > value + min_improvement:
        return True, f"lower bound {new_lcb:.5f} beats {name} {value:.5f}"
    return False, f"lower bound {new_lcb:.5f} does not beat {name} {value:.5f}"


def _python_model() -> Any:
    """The pyfunc wrapper (built lazily so that importing this module does not import mlflow)."""
    import mlflow.pyfunc

    class RouterPolicyModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        """Predicts the posterior mean quality of every arm for rows with ``embedding`` and ``input_tokens``."""

        def load_context(self, context: Any) -> None:
            from learned_router.strategies.thompson import ThompsonStrategy

            self.strategy = ThompsonStrategy.load(Path(context.artifacts[MODEL_DIR_KEY]) / "policy")

        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # mlflow reads hints
            import numpy as np
            import pandas as pd

            from learned_router.strategies.base import Features

            s = self.strategy
            rows = []
            for _, row in model_input.iterrows():
                x = s.context(Features(int(row["input_tokens"]), 0,
                                       embedding=np.asarray(row["embedding"], dtype=np.float32)))
                rows.append(s.model.mean(x))
            return pd.DataFrame(rows, columns=s.arms)

    return RouterPolicyModel()


class NullTracker:
    """A tracker that records nothing (training without MLflow)."""

    uri: str | None = None

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float]) -> None: ...

    def log_artifacts(self, folder: str | Path) -> None: ...

    def register(self, version_dir: str | Path, tags: Mapping[str, Any]) -> str | None:
        return None

    def champion(self) -> dict[str, Any] | None:
        return None

    def champion_dir(self) -> Path | None:
        return None

    def promote(self, version: str | None) -> None: ...


class MlflowTracker:
    """Logs one training run to MLflow and manages the registered model.

    Args:
        tracking_uri: e.g. ``sqlite:///mlflow.db`` or ``file:///tmp/mlruns``.
        experiment: the MLflow experiment name.
        registry_name: the registered model name.
        run_name: the run's display name.
    """

    def __init__(self, tracking_uri: str, *, experiment: str = "learned-router",
                 registry_name: str = "learned-router", run_name: str | None = None) -> None:
        self.uri = tracking_uri
        self.experiment = experiment
        self.registry_name = registry_name
        self.run_name = run_name
        self._run: Any = None

    def _mlflow(self) -> Any:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        return mlflow

    def __enter__(self) -> MlflowTracker:
        mlflow = self._mlflow()
        if mlflow.get_experiment_by_name(self.experiment) is None:
            mlflow.create_experiment(self.experiment, artifact_location=_artifact_location(self.uri))
        mlflow.set_experiment(self.experiment)
        self._run = mlflow.start_run(run_name=self.run_name)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._mlflow().end_run(status="FAILED" if exc_type is not None else "FINISHED")
        self._run = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._mlflow().log_params({k: str(v)[:500] for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        clean = {k.replace("@", "_"): float(v) for k, v in metrics.items() if v is not None and v == v}
        self._mlflow().log_metrics(clean)

    def log_artifacts(self, folder: str | Path) -> None:
        self._mlflow().log_artifacts(str(folder))

    def register(self, version_dir: str | Path, tags: Mapping[str, Any]) -> str | None:
        """Log the model folder as a pyfunc model and register it; returns the registry version."""
        mlflow = self._mlflow()
        info = mlflow.pyfunc.log_model(name="router_policy", python_model=_python_model(),
                                       artifacts={MODEL_DIR_KEY: str(version_dir)}, pip_requirements=[])
        mv = mlflow.register_model(info.model_uri, self.registry_name, tags={k: str(v) for k, v in tags.items()})
        return str(mv.version)

    def champion(self) -> dict[str, Any] | None:
        """The current champion's registry version and tags (None when there is none)."""
        mlflow = self._mlflow()
        from mlflow.exceptions import MlflowException

        client = mlflow.MlflowClient()
        try:
            mv = client.get_model_version_by_alias(self.registry_name, CHAMPION)
        except MlflowException:
            return None
        return {"version": str(mv.version), "tags": dict(mv.tags or {}), "run_id": mv.run_id}

    def champion_dir(self) -> Path | None:
        if self.champion() is None:
            return None
        return resolve_model_uri(f"models:/{self.registry_name}@{CHAMPION}", tracking_uri=self.uri)

    def promote(self, version: str | None) -> None:
        if version is None:
            return
        self._mlflow().MlflowClient().set_registered_model_alias(self.registry_name, CHAMPION, version)


def resolve_model_uri(uri: str, *, tracking_uri: str | None = None, dst: str | Path | None = None) -> Path:
    """A local model folder (the one ``training/train.py`` wrote) for a ``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION`` URI; plain paths are returned as they are.

    Raises:
        FileNotFoundError: the URI names no model, or the download has no model folder.
    """
    if not uri.startswith("models:/"):
        return Path(uri)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri is not None:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=None if dst is None else str(dst)))
    except MlflowException as exc:
        raise FileNotFoundError(f"cannot resolve {uri}: {exc}") from exc
    candidates = [p.parent for p in local.rglob("manifest.json") if (p.parent / "policy").is_dir()]
    if not candidates:
        raise FileNotFoundError(f"{uri} holds no learned-router model folder (downloaded to {local})")
    return sorted(candidates, key=lambda p: len(p.parts))[0]
