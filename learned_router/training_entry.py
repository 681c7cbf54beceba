"""``learned-router train``: runs ``training/train.py`` (which lives beside the package in a source checkout,
not in the wheel, since only training needs mlflow and pandas)."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["run_train"]


def _import_main():  # type: ignore[no-untyped-def]
    try:
        from training.train import main
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parent.parent
        if not (root / "training" / "train.py").is_file():
            raise SystemExit("learned-router train needs the source checkout (training/train.py); "
                             "clone the repository and run it from there") from None
        sys.path.insert(0, str(root))
        from training.train import main
    return main


def run_train(argv: list[str]) -> int:
    return int(_import_main()(argv))
