"""The demo's PNG: share of traffic per provider, judged quality and cost per request, over time.

matplotlib is imported inside ``plot_demo`` (Agg backend: no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_demo"]

_COLORS = ("#4C72B0", "#DD8452", "#C44E52", "#55A868", "#8172B3", "#937860", "#DA8BC3")


def _rolling(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over ``window`` points (fewer at both ends), so a change lines up with its cause in time
    instead of trailing it by half a window."""
    csum = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    idx = np.arange(len(values))
    lo = np.maximum(0, idx - window // 2)
    hi = np.minimum(len(values), idx + (window - window // 2))
    return (csum[hi] - csum[lo]) / (hi - lo)


def plot_demo(results: Sequence[Any], events: Sequence[tuple[float, str, str]], outage: Sequence[float],
              providers: Sequence[str], path: Path, *, failing: str = "a provider", window: int = 30) -> Path:
    """Write the demo plot to ``path`` and return it.

    Args:
        results: served requests (``demo.Served``: ``t``, ``provider``, ``cost_usd``, ``quality``).
        events: breaker events ``(t, provider, "opened" | "closed")``.
        outage: ``[start_s]`` or ``[start_s, end_s]`` of the simulated outage.
        providers: provider names, in legend order.
        failing: the provider of the outage (for the caption).
        window: requests in each rolling average.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = sorted((r for r in results if r.provider is not None), key=lambda r: r.t)
    t = np.array([r.t for r in ok], dtype=float)
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True, height_ratios=(1.4, 1, 1),
                             layout="constrained")
    share_ax, quality_ax, cost_ax = axes
    colors = {p: _COLORS[i % len(_COLORS)] for i, p in enumerate(providers)}
    if ok:
        shares = [_rolling(np.array([r.provider == p for r in ok]), window) * 100 for p in providers]
        share_ax.stackplot(t, *shares, labels=list(providers), colors=[colors[p] for p in providers],
                           alpha=0.85)
        quality = np.array([r.quality if r.quality is not None else np.nan for r in ok], dtype=float)
        quality_ax.plot(t, quality, ".", color="0.75", markersize=3, label="each answer")
        quality_ax.plot(t, _rolling(np.nan_to_num(quality, nan=0.0), window), color="#4C72B0", lw=2,
                        label=f"mean of {window} around each point")
        cost = np.array([r.cost_usd for r in ok], dtype=float) * 1000
        cost_ax.plot(t, _rolling(cost, window), color="#55A868", lw=2,
                     label=f"mean of {window} around each point")
        cost_ax.plot(t, np.cumsum(cost) / np.arange(1, len(cost) + 1), color="0.4", lw=1, ls="--",
                     label="mean so far")
    share_ax.set_ylabel(f"share of traffic, %\n({window} requests around each point)")
    share_ax.set_ylim(0, 100)
    share_ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, title="served by")
    quality_ax.set_ylabel("judged quality")
    quality_ax.set_ylim(0, 1.02)
    quality_ax.legend(loc="lower left", fontsize=8)
    cost_ax.set_ylabel("cost per request\n(USD per 1,000 requests)")
    cost_ax.set_xlabel("seconds since the first request")
    cost_ax.set_ylim(bottom=0)
    cost_ax.legend(loc="upper left", fontsize=8)
    end = float(t[-1]) if len(t) else 1.0
    for ax in axes:
        if outage:
            ax.axvspan(outage[0], outage[1] if len(outage) > 1 else end, color="#C44E52", alpha=0.08)
        for when, name, kind in events:
            ax.axvline(when, color="#C44E52" if kind == "opened" else "#55A868", lw=1, ls=":")
    if outage:
        share_ax.text(outage[0], 101, " outage", color="#C44E52", fontsize=9, va="bottom")
    for when, name, kind in events:
        share_ax.text(when, -2, f"{name} breaker {'opens' if kind == 'opened' else 'closes'}", rotation=90,
                      fontsize=7, va="top", ha="right", color="#C44E52" if kind == "opened" else "#2E7D32")
    fig.suptitle("learned-router demo: traffic share, judged quality and cost over time\n"
                 f"shaded: simulated outage of {failing}; dotted lines: its circuit breaker opens (red) and "
                 "closes (green)", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
