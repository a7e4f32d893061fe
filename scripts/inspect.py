"""Pictures of what an agent learned: python -m scripts.inspect CHECKPOINT --out model.png.

Runs side by side: python -m scripts.inspect RUN --compare OTHER_RUN [--out curves.png] prints when
each run's running mean (last 100 games) first reached -10, 0, +10 and +18 (steps, games, wall-clock
minutes), then every run's running mean at equal agent steps and at equal wall clock, from their
progress.csv; --out draws the curves against steps and against minutes. `RUN --milestones` prints
the first table (and with --out draws the curve) of one run.

Draws the first layer's weights as a grid of images: for a policy on Karpathy's preset each of the
hidden units' 6400 input weights as an 80x80 tile (as in "Pong from Pixels"); on the deepmind
preset the units' weights as the 4 stacked 84x84 frames side by side; for DQN's conv net every
conv1 filter, its 4 input frames side by side. Each tile is scaled to its own largest weight:
gray is 0, white positive, black negative. Beside the weights, the learning curve: a run dir's
progress.csv (and eval.csv) when the checkpoint sits in one, else a shipped agent's curve
(checkpoints/<name>.png beside checkpoints/<name>.npz); without either it says why there is none.
The title counts every step behind the weights, those of the file an --init run started from too.
"""
import argparse
import csv
import json
import os
import sys

import numpy as np

from agents.curve import at_equal, compare_figure, milestones, read_progress
from agents.run import CheckpointError, load_checkpoint
from nets.model import Sequential
from nets.npzfile import atomic_write
from scripts.common import Parser, UsageError, cannot_write, fail, finite_float

GAP = 1  # pixels of NaN (drawn as the background) between tiles


def build_parser():
    p = Parser(prog="python -m scripts.inspect", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="an agent checkpoint (.npz); with --compare or --milestones a run dir "
                                      "(or the checkpoint in one)")
    p.add_argument("--out", default=None, help="the picture to write (.png, .pdf or .svg; default model.png; "
                                              "with --compare or --milestones only when given)")
    p.add_argument("--units", type=int, default=0, help="draw only the first N units or filters (default all)")
    p.add_argument("--compare", action="append", default=[], metavar="RUN",
                   help="another run dir to set beside the first, at equal steps and equal wall clock (repeat it "
                        "for more)")
    p.add_argument("--milestones", action="store_true",
                   help="print when the run's running mean first reached each of --levels")
    p.add_argument("--label", action="append", default=[], metavar="NAME",
                   help="the runs' names in the tables and the picture, in order (default: their folder names)")
    p.add_argument("--levels", default="-10,0,10,18", help="running-mean levels of the milestone table "
                                                            "(default -10,0,10,18)")
    return p


def run_progress(path):
    """progress.csv of a run dir, or of the run dir a checkpoint sits in; UsageError otherwise."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory")
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    progress = os.path.join(folder, "progress.csv")
    if not os.path.exists(progress):
        raise UsageError(f"{path}: not a run dir (no progress.csv in {folder})")
    try:
        read_progress(progress)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"{progress}: cannot read it ({e})") from None
    return progress


def parse_levels(text):
    try:
        levels = [finite_float(v) for v in text.split(",") if v.strip()]
    except argparse.ArgumentTypeError:
        raise UsageError(f"--levels {text}: give finite numbers separated by commas, e.g. -10,0,10,18") from None
    if not levels:
        raise UsageError("--levels: give at least one level")
    return levels


def compare_runs(args):
    """--compare / --milestones: tables on stdout (last line JSON), the picture with --out."""
    paths = [args.checkpoint, *args.compare]
    progress = [run_progress(p) for p in paths]
    if len(args.label) > len(paths):
        raise UsageError(f"--label given {len(args.label)} times for {len(paths)} runs")
    labels = args.label + [os.path.basename(os.path.dirname(p)) for p in progress[len(args.label):]]
    if len(set(labels)) < len(labels):
        raise UsageError(f"two runs have the same name ({', '.join(labels)}): name them with --label")
    levels = parse_levels(args.levels)
    if args.out is not None:
        check_out(args.out)
    width = max(len(x) for x in labels)
    found = {label: milestones(p, levels) for label, p in zip(labels, progress)}
    print("first time the running mean (last 100 games) reached each level: steps, games, wall-clock minutes")
    print(" " * width + "".join(f"  {level:>+29g}" for level in levels))
    for label, rows in found.items():
        cells = [("not reached" if r["step"] is None else f"{r['step']:,} / {r['episode']:,} / {r['minutes']:g} min")
                 for r in rows]
        print(f"{label:<{width}}" + "".join(f"  {c:>29}" for c in cells))
    result = {"milestones": found}
    if args.compare:
        table = at_equal(list(zip(labels, progress)))
        for name, unit in (("steps", "step"), ("minutes", "minutes")):
            print(f"\nrunning mean at equal {'agent steps' if name == 'steps' else 'wall clock (minutes)'}:")
            print(f"{unit:>12}" + "".join(f"  {label:>{max(8, len(label))}}" for label in labels))
            for row in table[name]:
                x = f"{row[unit]:,}" if unit == "step" else f"{row[unit]:g}"
                print(f"{x:>12}" + "".join(f"  {'-' if row[label] is None else format(row[label], '+.2f'):>{max(8, len(label))}}"
                                           for label in labels))
        result.update(table)
    if args.out is not None:
        import matplotlib.pyplot as plt
        fig = compare_figure(list(zip(labels, progress)), title="running mean of the last 100 games")
        try:
            with atomic_write(args.out) as f:
                fig.savefig(f, format=os.path.splitext(args.out)[1][1:].lower())
        except OSError as e:
            raise cannot_write("--out", args.out, e) from None
        finally:
            plt.close(fig)
        print(f"\nwrote {args.out}")
    print(json.dumps(result))
    return 0


def check_out(out):
    if os.path.splitext(out)[1].lower() not in (".png", ".pdf", ".svg"):
        raise UsageError(f"--out {out}: write a .png, .pdf or .svg")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UsageError(f"--out {out}: no such directory {folder}")


def first_layer_tiles(models, header):
    """(tiles (K, h, w) float, what they are): one normalized tile per unit or filter of the first layer."""
    layer = models["model"].layers[0]
    while isinstance(layer, Sequential):  # PPO's actor and critic towers side by side (Parallel): the actor's
        layer = layer.layers[0]
    if "W" not in layer.params:
        raise UsageError(f"the first layer ({type(layer).__name__}) has no weights: nothing to draw")
    W = np.asarray(layer.params["W"], np.float64)
    preset = header["env"].get("preset")
    if W.ndim == 4:  # conv (out, in, kh, kw): the in-channels side by side
        out, cin, kh, kw = W.shape
        tiles = side_by_side(W)  # (out, kh, cin * (kw + GAP) - GAP)
        return tiles, f"conv1: {out} filters {kh}x{kw} over {cin} stacked frames (oldest left)"
    if W.ndim != 2:
        raise UsageError(f"the first layer's weights have shape {W.shape}: nothing to draw")
    n_in, units = W.shape
    if preset == "karpathy" and n_in == 6400:
        return W.T.reshape(units, 80, 80), f"first layer: {units} hidden units, 80x80 frame-difference weights"
    obs_shape = tuple(header.get("obs_shape", ()))
    if len(obs_shape) == 3 and int(np.prod(obs_shape)) == n_in:  # (C, H, W) stacks
        return side_by_side(W.T.reshape(units, *obs_shape)), f"first layer: {units} units over {obs_shape[0]} frames"
    return W.T[:, None, :], f"first layer: {units} units x {n_in} inputs (one row each)"


def side_by_side(stacks):
    """(K, C, h, w) -> (K, h, C*(w+GAP)-GAP): the C channels of each in a row, NaN between."""
    k, c, h, w = stacks.shape
    out = np.full((k, h, c * (w + GAP) - GAP), np.nan)
    for i in range(c):
        out[:, :, i * (w + GAP):i * (w + GAP) + w] = stacks[:, i]
    return out


def mosaic(tiles, columns=None):
    """(K, h, w) -> one 2-D image of the tiles in a grid, each divided by its largest |weight|."""
    k, h, w = tiles.shape
    scale = np.nanmax(np.abs(tiles.reshape(k, -1)), axis=1)  # (K,)
    tiles = tiles / np.where(scale > 0, scale, 1.0)[:, None, None]  # each in [-1, 1]
    columns = columns or int(np.ceil(np.sqrt(k * h / w * 1.6)))  # a grid a little wider than tall
    columns = max(1, min(k, columns))
    rows = -(-k // columns)
    gap = max(3, h // 20)  # wider than the GAP between one filter's frames
    image = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), np.nan)
    for i in range(k):
        r, c = divmod(i, columns)
        image[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tiles[i]
    return image


def learning_curve(ax, run_dir):
    cols = read_progress(os.path.join(run_dir, "progress.csv"))
    if cols.get("step") and cols.get("return"):
        ax.plot(cols["step"], cols["return"], alpha=0.25, linewidth=0.7, label="game return")
        if cols.get("running_mean"):
            ax.plot(cols["step"], cols["running_mean"], label="running mean (100)")
    evals = os.path.join(run_dir, "eval.csv")
    if os.path.exists(evals):
        ev = read_progress(evals)
        if ev.get("step") and ev.get("mean_return"):
            ax.plot(ev["step"], ev["mean_return"], "o-", markersize=3, label="evaluation mean")
    ax.set_xlabel("agent steps")
    ax.set_ylabel("return")
    ax.set_title("learning curve")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a run with no game finished yet has nothing to name
        ax.legend(loc="lower right", fontsize=8)


def curve_source(checkpoint, out_path=None):
    """("run", run dir) when the checkpoint sits in a run dir with progress.csv, ("shipped", png) for a
    shipped agent's curve beside it (checkpoints/<name>.png, not the picture being written), else
    ("none", why)."""
    folder = os.path.dirname(os.path.abspath(checkpoint))
    if os.path.exists(os.path.join(folder, "progress.csv")):
        return "run", folder
    png = os.path.splitext(os.path.abspath(checkpoint))[0] + ".png"
    if os.path.exists(png) and png != os.path.abspath(out_path or ""):
        return "shipped", png
    return "none", (f"no learning curve: {checkpoint} has no progress.csv beside it (a run dir's checkpoint has) "
                    f"nor a {os.path.basename(png)} (a shipped agent's curve)")


def steps_title(header):
    """'step 2,188,417' counting the steps of the file an --init run started from ("trained_before")."""
    step = header.get("step")
    if not isinstance(step, int):
        return "step ?"
    before = header.get("trained_before") if isinstance(header.get("trained_before"), dict) else {}
    earlier = before.get("step") if isinstance(before.get("step"), int) else 0
    if not earlier:
        return f"step {step:,}"
    return f"{step + earlier:,} steps ({earlier:,} before its last run, {step:,} in it)"


def draw(models, header, checkpoint, out_path, units=0):
    """Write the picture; returns (the number of tiles drawn, why there is no curve or None)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiles, what = first_layer_tiles(models, header)
    if units:
        tiles = tiles[:units]
    image = mosaic(tiles)
    kind, source = curve_source(checkpoint, out_path)
    has_curve = kind != "none"
    fig = plt.figure(figsize=(15 if has_curve else 10, 7), dpi=110)
    grid = fig.add_gridspec(1, 2, width_ratios=[3, 2]) if has_curve else fig.add_gridspec(1, 1)
    ax = fig.add_subplot(grid[0, 0])
    cmap = matplotlib.colormaps["gray"].with_extremes(bad=(0.85, 0.8, 0.7))  # bad: the NaN gaps
    ax.imshow(image, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(what, fontsize=10)
    ax.axis("off")
    if kind == "run":
        learning_curve(fig.add_subplot(grid[0, 1]), source)
    elif kind == "shipped":
        curve = fig.add_subplot(grid[0, 1])
        curve.imshow(plt.imread(source))
        curve.axis("off")
        last = " of its last run" if isinstance(header.get("trained_before"), dict) else ""
        curve.set_title(f"learning curve{last} ({os.path.basename(source)}, shipped with it)", fontsize=10)
    env = header["env"]
    fig.suptitle(f"{os.path.basename(checkpoint)}: {env.get('env_id')} {header.get('agent')} "
                 f"({env.get('preset')}), {steps_title(header)}")
    fig.tight_layout()
    with atomic_write(out_path) as f:  # a picture half written by a crash never replaces a good one
        fig.savefig(f, format=os.path.splitext(out_path)[1][1:].lower())
    plt.close(fig)
    return len(tiles), None if has_curve else source


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.compare or args.milestones:
            return compare_runs(args)
        args.out = args.out or "model.png"
        if args.units < 0:
            raise UsageError(f"--units must be >= 0, got {args.units}")
        check_out(args.out)
        try:
            models, header, _ = load_checkpoint(args.checkpoint)
        except CheckpointError as e:
            raise UsageError(str(e)) from None
        if not isinstance(header.get("env"), dict):
            raise UsageError(f"{args.checkpoint}: checkpoint has no env spec")
        try:
            count, no_curve = draw(models, header, args.checkpoint, args.out, args.units)
        except OSError as e:
            raise cannot_write("--out", args.out, e) from None
    except UsageError as e:
        fail(str(e))
    if no_curve:
        print(no_curve, file=sys.stderr)
    print(f"wrote {args.out}: {count} tiles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
