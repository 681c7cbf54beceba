"""A PNG of every router's cost-quality frontier (and the online learning curve when there is one)."""

from __future__ import annotations

from pathlib import Path

from learned_router.bench.result import BenchResult

__all__ = ["plot_result"]

_STYLE = {"learned": ("-", "o", 2.2), "knn": ("--", "s", 1.4), "regression": ("--", "^", 1.4),
          "oracle": (":", "", 1.2)}


def plot_result(result: BenchResult, path: str | Path) -> Path:
    """Draw the frontiers (log cost axis) and, for online mode, cumulative regret; write a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    curve = result.online_curve
    ncols = 2 if curve else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7.5 * ncols, 5.5), squeeze=False)
    ax = axes[0][0]
    for router in result.routers.values():
        if router.family in _STYLE:
            ls, marker, lw = _STYLE[router.family]
            pts = sorted(zip(router.cost, router.quality, strict=True))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=ls, marker=marker, markersize=3,
                    linewidth=lw, label=router.name)
    singles = [r for r in result.routers.values() if r.family == "single"]
    ax.scatter([r.cost[0] for r in singles], [r.quality[0] for r in singles], s=14, c="grey", label="single models")
    best = result.reference.get("best_model")
    for r in singles:
        if r.name == f"model:{best}":
            ax.annotate(best, (r.cost[0], r.quality[0]), fontsize=7, xytext=(3, -10), textcoords="offset points")
    for r in result.routers.values():
        if r.family in ("rule", "random"):
            ax.scatter(r.cost, r.quality, marker="x", s=30, label=r.name)
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per prompt (USD, test split)")
    ax.set_ylabel("mean quality (test split)")
    ax.set_title(f"{result.dataset}: cost-quality frontiers")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if curve:
        ax2 = axes[0][1]
        ax2.plot(curve["step"], curve["regret_vs_best_fixed"], label="regret vs best fixed model")
        ax2.plot(curve["step"], curve["regret_vs_oracle"], label="regret vs oracle")
        ax2.set_xlabel("prompts streamed (train split)")
        ax2.set_ylabel("cumulative regret (utility)")
        ax2.set_title(f"online learning curve (w_cost={curve['w_cost'][0]:.3g})")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
