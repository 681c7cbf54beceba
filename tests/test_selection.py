"""Choosing the policy's width and prior precision: by squared error, or by the value of its decisions."""

from __future__ import annotations

import numpy as np
import pytest

from learned_router.strategies.selection import LoggedValue, TrainInputs, select

K = 4


def _logged(signal: float, n: int = 1200, seed: int = 0) -> tuple[TrainInputs, np.ndarray, np.ndarray, LoggedValue]:
    """Uniformly logged rows; arm 0 is right 60% of the time everywhere; with ``signal`` > 0 the arm that
    is right depends on the sign of the first embedding coordinate (arms 1 and 2 split the space)."""
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((n, 16)).astype(np.float32)
    p = np.full((n, K), 0.4)
    p[:, 0] = 0.6
    side = E[:, 0] > 0
    p[side, 1] += signal
    p[~side, 2] += signal
    arms = rng.integers(0, K, n)
    quality = (rng.random(n) < p[np.arange(n), arms]).astype(float)
    value = LoggedValue(np.ones(n), np.zeros((n, K)), arms, np.full(n, 1.0 / K), quality)
    inputs = TrainInputs(E, np.full(n, 50.0), None, ())
    return inputs, arms, quality, value


def _priors(arms: np.ndarray, quality: np.ndarray) -> np.ndarray:
    return np.array([quality[arms == a].mean() for a in range(K)])


def test_without_signal_the_strongest_prior_within_one_standard_error_wins() -> None:
    inputs, arms, quality, value = _logged(signal=0.0)
    sel = select(inputs, quality, _priors(arms, quality), arms=arms, components=(2, 8), clusters=(0,), value=value)
    assert sel.alpha == 3000.0 and sel.n_components == 2  # routes like the best fixed arm
    assert sel.cv_value == pytest.approx(quality[arms == 0].mean(), abs=0.05)


def test_with_signal_the_context_is_kept_and_its_decisions_are_worth_more() -> None:
    inputs, arms, quality, value = _logged(signal=0.5)
    priors = _priors(arms, quality)
    by_value = select(inputs, quality, priors, arms=arms, components=(2, 8), clusters=(0,), value=value)
    assert by_value.cv_value > 0.75  # the embedding decides: 0.9 when always right, 0.6 for the best fixed arm
    by_error = select(inputs, quality, priors, arms=arms, components=(2, 8), clusters=(0,))
    assert by_error.cv_value is None and by_error.cv_error > 0.0


def test_max_dim_below_every_candidate_is_an_error() -> None:
    inputs, arms, quality, value = _logged(signal=0.0, n=200)
    with pytest.raises(ValueError, match="max_dim 3 is below the narrowest context"):
        select(inputs, quality, _priors(arms, quality), arms=arms, components=(2, 8), max_dim=3, value=value)


def test_decisions_that_never_match_the_log_fall_back_to_the_squared_error() -> None:
    inputs, arms, quality, value = _logged(signal=0.5, n=600)
    offsets = np.zeros((600, K))
    offsets[:, 3] = -np.inf  # no candidate can choose arm 3 ...
    never = LoggedValue(value.w_quality, offsets, np.full(600, 3), value.propensity, value.utility)  # ... the log's
    priors = _priors(arms, quality)
    sel = select(inputs, quality, priors, arms=arms, components=(2, 8), clusters=(0,), value=never)
    by_error = select(inputs, quality, priors, arms=arms, components=(2, 8), clusters=(0,))
    assert sel == by_error and sel.cv_value is None
