"""The one way a study writes a figure file: its folder made, saved at the project's resolution, closed."""

from __future__ import annotations

from pathlib import Path

DPI = 130


def save_figure(fig, path) -> Path:
    """Write `fig` to `path` (creating its folder) and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
