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


def milestones(progress_path, levels=(-10.0, 0.0, 10.0, 18.0)):
    """The first time the running mean (last 100 episodes) reached each level: [{level, step, episode,
    minutes}] with None for a level never reached, as progress.csv recorded it."""
    cols = read_progress(progress_path)
    out = []
    for level in levels:
        row = {"level": level, "step": None, "episode": None, "minutes": None}
        for i, mean in enumerate(cols.get("running_mean", [])):
            if mean >= level:
                row.update(step=int(cols["step"][i]), episode=int(cols["episode"][i]),
                           minutes=round(cols["wall_seconds"][i] / 60.0, 1))
                break
        out.append(row)
    return out


def plot_against_time(out_path, runs, title=""):
    """Running mean (last 100 episodes) against wall-clock minutes, one line per (label, progress.csv)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for label, path in runs:
        cols = read_progress(path)
        if cols.get("episode"):
            minutes = [s / 60.0 for s in cols["wall_seconds"]]
            ax.plot(minutes, cols["running_mean"], label=f"{label}: running mean (100)")
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = f"{out_path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out_path)
