"""The throughput-against-cost Pareto plot of a plan search (PNG, matplotlib)."""

from __future__ import annotations

from pathlib import Path


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (tokens/s, $/hour) that no other point beats on both (more tokens, less cost)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    front, best = [], -1.0
    for i in order:
        if points[i][0] > best:
            front.append(i)
            best = points[i][0]
    return front


def plot_pareto(series: dict[str, list[tuple[float, float]]], path: str | Path, title: str) -> Path:
    """series: label -> [(tokens/s, $/hour)]; every plan as a dot, each label's Pareto front as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in series.items():
        if not points:
            continue
        dots = ax.scatter([c for _, c in points], [t for t, _ in points], s=10, alpha=0.35, label=f"{label}: plans")
        front = [points[i] for i in pareto_front(points)]
        ax.plot([c for _, c in front], [t for t, _ in front], "-o", ms=3, color=dots.get_facecolor()[0][:3],
                label=f"{label}: Pareto front")
    ax.set_xlabel("$ per hour")
    ax.set_ylabel("output tokens / s")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
