"""Learning-curve PNG from a run's progress.csv (matplotlib, headless)."""
import csv
import os


def read_progress(path):
    """Columns of progress.csv as lists of floats: {'step': [...], 'return': [...], ...}."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = {}
    for row in rows:
        for key, value in row.items():
            try:
                cols.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                pass
    return cols


def plot_progress(progress_path, out_path, title="", others=(), label="this run"):
    """Episode returns (faint) and running mean against episodes; others: [(label, path)] overlaid."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    plotted = False
    for label, path in [(label, progress_path), *others]:
        cols = read_progress(path)
        if not cols.get("episode"):
            continue
        line = ax.plot(cols["episode"], cols["running_mean"], label=f"{label}: running mean (100)")[0]
        ax.plot(cols["episode"], cols["return"], alpha=0.2, color=line.get_color(), linewidth=0.7)
        plotted = True
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no finished episode yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    tmp = f"{out_path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out_path)
