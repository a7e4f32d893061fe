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


def milestones(progress_path, levels=(-10.0, 0.0, 10.0, 18.0), window=100):
    """The first time the running mean of the last 100 episodes reached each level: [{level, step,
    episode, minutes}] with None for a level never reached, as progress.csv recorded it. Only rows
    from the window-th episode on count: before that the mean is of fewer games (a cloned policy's
    first game alone would "reach" +10)."""
    cols = read_progress(progress_path)
    out = []
    for level in levels:
        row = {"level": level, "step": None, "episode": None, "minutes": None}
        for i, mean in enumerate(cols.get("running_mean", [])):
            if cols["episode"][i] >= window and mean >= level:
                row.update(step=int(cols["step"][i]), episode=int(cols["episode"][i]),
                           minutes=round(cols["wall_seconds"][i] / 60.0, 1))
                break
        out.append(row)
    return out


def value_at(cols, key, x):
    """The running mean of the last episode that ended at or before x (in column `key`: "step" or
    "wall_seconds"), or None if none had."""
    best = None
    for at, mean in zip(cols.get(key, []), cols.get("running_mean", [])):
        if at > x:
            break
        best = mean
    return best


def at_equal(runs, points=4):
    """Runs compared at equal agent steps and at equal wall clock: {"steps": [{"step": s, label: mean,
    ...}], "minutes": [{"minutes": m, label: mean, ...}]} at `points` evenly spaced marks up to the
    shortest run's end (its last finished episode). runs: [(label, progress.csv)]."""
    cols = {label: read_progress(path) for label, path in runs}
    out = {}
    marks = {"steps": ("step", "step", int),  # table: (progress.csv column, row key, how the mark is shown)
             "minutes": ("wall_seconds", "minutes", lambda seconds: round(seconds / 60, 1))}
    for name, (key, unit, shown) in marks.items():
        ends = [c[key][-1] for c in cols.values() if c.get(key)]
        if len(ends) < len(cols):  # a run with no finished episode has no curve to compare
            out[name] = []
            continue
        end = min(ends)
        rows = []
        for k in range(1, points + 1):
            x = end * k / points
            row = {unit: shown(x)}
            for label, c in cols.items():
                v = value_at(c, key, x)
                row[label] = None if v is None else round(v, 2)
            rows.append(row)
        out[name] = rows
    return out


def compare_figure(runs, title=""):
    """A matplotlib figure of two panels: the running mean (last 100 episodes) of each (label,
    progress.csv) against agent steps and against wall-clock minutes. The caller saves and closes it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for label, path in runs:
        cols = read_progress(path)
        if not cols.get("episode"):
            continue
        axes[0].plot([s / 1e6 for s in cols["step"]], cols["running_mean"], label=label)
        axes[1].plot([s / 60.0 for s in cols["wall_seconds"]], cols["running_mean"], label=label)
    for ax, xlabel in zip(axes, ("agent steps (millions)", "wall-clock minutes")):
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("running mean of the last 100 games")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
