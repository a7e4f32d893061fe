"""Shipping a trained agent: the playing weights of a run (checkpoints/<name>.npz) and its card
(<name>.md): how it was trained, its settings, its evaluation JSON, the game's published scores beside
its own, its learning curve. scripts.ship parses the flags, plays the games and prints; this module
decides what a card says and whether a new agent beats the one already shipped, on the protocol it
trained on: every committed checkpoint stays in every clone forever.
"""
import json
import math
import os
import re
import shutil
import tempfile

from agents.curve import compare_figure, milestones, read_progress
from agents.evaluation import REFERENCE_SCORES, human_normalized
from agents.run import (CheckpointError, checkpoint_header, export_for_playing, home_relative, machine_text,
                        read_run_record, snapshot_paths)
from nets.data import sha256_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINTS = os.path.join(ROOT, "checkpoints")

# The final exploration SB3's zoo evaluates its Atari DQN at (rl_zoo3's enjoy plays Atari stochastically:
# exploration_final_eps) and CleanRL's dqn_atari training curves are played at.
SB3_EPSILON = 0.01


def play_rules(agent):
    """(greedy, epsilon) of each row a card reports, the first the one that decides a ship."""
    if agent.kind in ("pg", "ppo"):
        return [(False, None), (True, None)]
    return [(False, None)] + ([(False, SB3_EPSILON)] if agent.eval_epsilon != SB3_EPSILON else [])


def averaged_with(run_dir, checkpoint, k):
    """The k-1 snapshots of run_dir saved before checkpoint, oldest first; ValueError if there are fewer."""
    if k < 1:
        raise ValueError(f"--average must be >= 1, got {k}")
    if k == 1:
        return []
    try:
        step = checkpoint_header(checkpoint).get("step")
        earlier = [p for p in snapshot_paths(run_dir) if checkpoint_header(p).get("step") < step]
    except (CheckpointError, TypeError):
        raise ValueError(f"{run_dir}: a damaged checkpoint or snapshot, cannot average") from None
    if len(earlier) < k - 1:
        raise ValueError(f"--average {k}: {run_dir}/snapshots holds {len(earlier)} snapshots before the "
                         f"checkpoint, {k - 1} needed (train with --keep-snapshots)")
    return earlier[-(k - 1):]




def scores_in(text):
    """{protocol: mean return} of a card's text, the first result of each protocol ({} if none)."""
    scores = {}
    for m in re.finditer(r'"protocol": "([a-z0-9-]+)".*?"mean_return": (-?[0-9.]+)', text):
        scores.setdefault(m.group(1), float(m.group(2)))
    return scores


def shipped_scores(card_path):
    """scores_in an existing card ({} if there is none)."""
    if not os.path.exists(card_path):
        return {}
    with open(card_path, errors="replace") as f:
        return scores_in(f.read())


def comparison(results, old_scores, trained):
    """(protocol, new mean, old mean or None) deciding a ship: the protocol the agent trained on,
    else one both the card and the new results report."""
    new_scores = {}
    for r in results:
        new_scores.setdefault(r["protocol"], r["mean_return"])
    for protocol in [trained, *new_scores]:
        if protocol in new_scores and protocol in old_scores:
            return protocol, new_scores[protocol], old_scores[protocol]
    protocol = trained if trained in new_scores else results[0]["protocol"]
    return protocol, new_scores[protocol], None


def references(env_id, scored):
    """Markdown lines setting the agent's scores (result rows) beside the published ones,
    [] for other games."""
    ref = REFERENCE_SCORES.get(env_id)
    if ref is None:
        return []
    lines = ["## Against published scores", "",
             "Random and human play from the Atari-57 table of van Hasselt et al. (2016), the one DQN Zoo "
             "normalizes by; Nature DQN from Mnih et al. (2015); each published agent's row says at which epsilon "
             "its games were played (`agents/evaluation.py` names the sources). Human-normalized: 100 * "
             "(score - random) / (human - random).", "",
             f"| {env_id} | mean return | human-normalized |", "|---|---|---|"]
    for who, value in ref.items():
        lines.append(f"| {who} | {value:g} | {human_normalized(env_id, value):.0f}% |")
    for r in scored:
        score = r["mean_return"]
        lines.append(f"| **this agent** ({r['protocol']}, {r['actions']}, {r['episodes']} games) | **{score:.2f}** | "
                     f"**{human_normalized(env_id, score):.0f}%** |")
    return lines + [""]


def init_record(config):
    """config.json's "init" (what an --init checkpoint brought the run), None if absent or malformed."""
    init = config.get("init")
    number = (int, float)
    if (isinstance(init, dict) and isinstance(init.get("path"), str) and isinstance(init.get("sha256"), str)
            and all(isinstance(init.get(k), number) and not isinstance(init.get(k), bool)
                    for k in ("step", "episode", "wall_seconds"))):
        return init
    return None


def earlier_commands(init):
    """The commands that trained a run's --init checkpoint, from the card beside it, while that file is
    still the one the run started from (same sha256); None otherwise. A relative path is tried from
    here, then from the repo root (where scripts.train usually runs)."""
    for path in (init["path"], os.path.join(ROOT, init["path"])):
        try:
            if sha256_of(path) != init["sha256"]:
                continue
            with open(os.path.splitext(path)[0] + ".md") as f:
                text = f.read()
            break
        except OSError:
            continue
    else:
        return None
    m = re.search(r"## How it was trained\n\n```bash\n(.*?)\n```", text, re.S)
    return m.group(1) if m else None


def compact_json(settings, width=100):
    """A settings dict as JSON with its items sorted and wrapped into lines of about `width` characters."""
    items = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(settings.items())]
    lines = [""]
    for item in items:
        if lines[-1] and len(lines[-1]) + len(item) + 2 > width:
            lines[-1] += ","
            lines.append("")
        lines[-1] += (", " if lines[-1] else "") + item
    return "{" + "\n ".join(lines) + "}"


def averaged(header):
    """The card's sentence on weight averaging (ship --average), empty for a single checkpoint."""
    steps = header.get("averaged_steps")
    if not steps:
        return ""
    return (f" Its weights are the mean of the run's last {len(steps)} saves, at steps "
            f"{', '.join(f'{s:,}' for s in steps)} (`scripts.ship --average {len(steps)}`, as in SWA, "
            "Izmailov et al. 2018); the evaluation below is of those mean weights.")


def where(config):
    """The machine and BLAS threads config.json recorded, as the card says them."""
    text = machine_text(config.get("machine")) or "a machine its config.json does not describe"
    threads = config.get("blas_threads")
    return f"{text}, BLAS threads {threads}" if threads else text


PONG_LEVELS = (-10.0, 0.0, 10.0, 18.0)  # Pong's: off the floor, level with the built-in AI, well ahead, near 21


def run_levels(progress, window=100):
    """Levels for a game without Pong's: a quarter, half and three quarters of the way from the run's
    first running mean of `window` games to its best, and (a little under) its best; () before that."""
    cols = read_progress(progress)
    means = [m for e, m in zip(cols.get("episode", []), cols.get("running_mean", [])) if e >= window]
    if not means:
        return ()
    lo, hi = means[0], max(means)
    return tuple(dict.fromkeys(math.floor(10 * (lo + f * (hi - lo))) / 10 for f in (0.25, 0.5, 0.75, 1.0)))


def milestone_lines(progress, continued=False, env_id="ALE/Pong-v5"):
    """The card's table of when the running mean of 100 games first reached each level: Pong's -10, 0,
    +10 and +18, another game's run_levels."""
    pong = env_id == "ALE/Pong-v5"
    rows = milestones(progress, PONG_LEVELS if pong else run_levels(progress))
    which = "its last run (the one continued from the `--init` weights)" if continued else "the run"
    levels = "" if pong else (" (a quarter, half and three quarters of the way from its first running mean "
                              "to its best, and its best)")
    flag = "" if pong else " --levels " + ",".join(format(r["level"], "g") for r in rows)
    lines = ["## Time to a winning agent", "",
             f"When the running mean of the last 100 training games first reached each level{levels}, in {which}; "
             f"`python -m scripts.inspect RUN_DIR --milestones{flag}` prints it:", "",
             "| running mean | agent steps | games | wall clock |", "|---|---|---|---|"]
    for r in rows:
        if r["step"] is None:
            lines.append(f"| {r['level']:+g} | not reached | | |")
        else:
            lines.append(f"| {r['level']:+g} | {r['step']:,} | {r['episode']:,} | {r['minutes']:g} min |")
    return lines + [""]


def train_command(argv):
    """A recorded sys.argv as the command to type, with the home directory written ~ (no machine's
    home on a card)."""
    home = os.path.expanduser("~") + os.sep
    return " ".join(["python", "-m", "scripts.train", *(home_relative(a) if a.startswith(home) else a for a in argv[1:])])


def draw_curves(path, runs):
    """The card's picture: the running mean of each (label, progress.csv) against agent steps and
    against wall-clock minutes (agents.curve.compare_figure)."""
    import matplotlib.pyplot as plt
    fig = compare_figure(runs, title="running mean of the last 100 training games")
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def compared_lines(compare):
    """Under the curve: the command of each run drawn beside the shipped one (from its config.json)."""
    if not compare:
        return []
    lines = ["Beside it on the picture, each trained alone on the same machine:", ""]
    for label, record in compare:
        lines.append(f"- {label}: `{train_command(record.get('command', []))}`")
    return lines + [""]


def shipped_path(out_dir, name):
    """The shipped file as its card and evaluation lines name it: checkpoints/<name>.npz in the repo's
    own folder (a path that holds on every clone), else under out_dir as given."""
    if os.path.abspath(out_dir) == os.path.abspath(CHECKPOINTS):
        return f"checkpoints/{name}.npz"
    return os.path.join(out_dir, f"{name}.npz")


def card(name, config, header, results, curve_name, seed, workers=0, scored=None, earlier=None, progress=None,
         compare=()):
    """The markdown card; earlier: the --init checkpoint's own commands (earlier_commands)."""
    def shell(argv):
        return train_command(argv)
    def stop(r):
        return f"# then, after a stop at step {r['step']:,}:" if "step" in r else "# then, after a stop:"
    command = "\n".join([shell(config.get("command", []))] +
                        [f"{stop(r)}\n{shell(r['command'])}" for r in config.get("resumes", [])])
    init = init_record(config)
    steps, episodes, seconds = header["step"], header["episode"], header.get("wall_seconds", 0.0)
    trained = ""
    if init:
        command = (f"{earlier}\n# then, a new run from those weights ({init['path']}, sha256 {init['sha256'][:12]}):\n"
                   if earlier else f"# from the weights of {init['path']} (sha256 {init['sha256']}), "
                   "trained as its own card says:\n") + command
        trained = (f" That is {init['step']:,} steps ({init['wall_seconds'] / 3600:.2f} h) behind its starting "
                   f"weights (`--init {init['path']}`), then {steps:,} steps ({seconds / 3600:.2f} h) "
                   "in the run that continued from them.")
        steps, episodes, seconds = steps + init["step"], episodes + init["episode"], seconds + init["wall_seconds"]
    lines = [f"# {name}", "",
             f"Agent `{header['agent']}` on `{header['env']['env_id']}` (preset `{header['env']['preset']}`), "
             f"trained for {steps:,} agent steps and {episodes:,} episodes in "
             f"{seconds / 3600:.2f} hours ({seconds:,.0f} s) of wall clock on {where(config)}."
             f"{trained}{averaged(header)}", "",
             "## How it was trained", "", "```bash", command, "```", "",
             "Settings (from the run's config.json):", "", "```json",
             compact_json(config.get("config", {})), "```", "",
             "## Evaluation", "",
             "Whole games on fresh seeds, printed by `python -m scripts.evaluate "
             f"{results[0]['checkpoint']} --episodes {results[0]['episodes']} --seed {seed}"
             f"{f' --workers {workers}' if workers else ''}` ("
             f"{'`--no-sticky` for NoFrameskip-v4, ' if header['env']['env_id'].startswith('ALE/') else ''}"
             "`--greedy` for the "
             "best action every step: a policy-gradient agent's most likely one, DQN's argmax without the "
             f"evaluation epsilon's random moves; `--epsilon {SB3_EPSILON:g}` for DQN's random moves at SB3's zoo's "
             "final exploration)"
             + (". With workers each game draws its random actions from its own seed, so it differs from the "
                "same game played without them" if workers else "") + ":", ""]
    lines += ["```json"] + [json.dumps(r) for r in results] + ["```", ""]
    lines += references(header["env"]["env_id"], scored or results[:1])
    if progress and os.path.exists(progress):
        lines += milestone_lines(progress, bool(init), header["env"]["env_id"])
    lines += ["## Learning curve", "", f"![learning curve]({curve_name})", ""] + compared_lines(compare)
    if init:
        lines[-1:-1] = ["", "The curve is of the last run, the one continued from the `--init` weights."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- staging and publishing

class Staged:
    """A run's playing weights exported into a temporary folder inside out_dir, published (moved in
    place with the card and the curve) or dropped; `header` is the exported file's header."""

    def __init__(self, run_dir, config, out_dir, name, average=1, compare=()):
        self.run_dir, self.config, self.out_dir, self.name = run_dir, config, out_dir, name
        self.compare = list(compare)  # [(label, run dir)] drawn beside the run on the card's curve
        src = os.path.join(run_dir, "checkpoint.npz")
        snapshots = averaged_with(run_dir, src, average)
        os.makedirs(out_dir, exist_ok=True)
        self.tmp = tempfile.mkdtemp(dir=out_dir, prefix=".ship-")
        self.path = os.path.join(self.tmp, f"{name}.npz")
        try:
            self.header = export_for_playing(src, self.path, before=init_record(config), average=snapshots)
        except CheckpointError:
            self.drop()
            raise

    @property
    def card_path(self):
        return os.path.join(self.out_dir, f"{self.name}.md")

    def publish(self, env, results, seed, workers, protocol):
        """Move the weights, the curve and a new card (card()) into out_dir."""
        init = init_record(self.config)
        earlier = earlier_commands(init) if init else None  # before the new file replaces the --init one
        self.header["env"] = env
        curve_name = f"{self.name}.png"
        progress = os.path.join(self.run_dir, "progress.csv")
        if os.path.exists(progress):  # against steps and wall-clock minutes, beside the compared runs
            draw_curves(os.path.join(self.tmp, curve_name), [(self.name, progress)] + [
                (label, os.path.join(d, "progress.csv")) for label, d in self.compare])
            os.replace(os.path.join(self.tmp, curve_name), os.path.join(self.out_dir, curve_name))
        os.replace(self.path, os.path.join(self.out_dir, f"{self.name}.npz"))
        # the compared protocol's rows, then the headline (first) row of each other protocol
        scored = [r for r in results if r["protocol"] == protocol]
        scored += [r for i, r in enumerate(results) if r["protocol"] != protocol
                   and all(o["protocol"] != r["protocol"] for o in results[:i])]
        with open(os.path.join(self.tmp, "card.md"), "w") as f:
            f.write(card(self.name, self.config, self.header, results, curve_name, seed, workers, scored, earlier,
                         progress=progress, compare=[(label, read_run_record(d)) for label, d in self.compare]))
        os.replace(os.path.join(self.tmp, "card.md"), self.card_path)
        self.drop()

    def drop(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
