"""Ship a trained agent: python -m scripts.ship RUN_DIR --name pong-pg [--episodes 30] [--seed S] [--workers N].

Exports the run's checkpoint with only what playing needs (float32 policy or online Q-network),
evaluates it on --episodes fresh games with scripts.evaluate's protocol, and writes
checkpoints/<name>.npz, <name>.md (the command that trained it, steps, episodes, hours, the
evaluation JSON, and the published scores of the game beside its own) and <name>.png (the learning
curve). It refuses, exit 1, unless the new agent scores better than the card of the one already
shipped, on the protocol the agent trained on (--force overrides), because every committed
checkpoint stays in every clone forever.
"""
import json
import os
import re
import shutil
import sys
import tempfile

from scripts.common import Parser, UsageError, check_workers, fail, load_agent

CHECKPOINTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")
# The final exploration SB3's zoo evaluates its Atari DQN at (rl_zoo3's enjoy plays Atari stochastically:
# exploration_final_eps) and CleanRL's dqn_atari training curves are played at.
SB3_EPSILON = 0.01


def play_rules(agent):
    """(greedy, epsilon) of each row a card reports, the first the one that decides a ship."""
    if agent.kind == "pg":
        return [(False, None), (True, None)]
    return [(False, None)] + ([(False, SB3_EPSILON)] if agent.eval_epsilon != SB3_EPSILON else [])


def build_parser():
    p = Parser(prog="python -m scripts.ship", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run dir holding checkpoint.npz, config.json and progress.csv")
    p.add_argument("--name", required=True, help="shipped name, e.g. pong-pg (checkpoints/<name>.npz)")
    p.add_argument("--episodes", type=int, default=30, help="evaluation games (default 30)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the first evaluation game")
    p.add_argument("--no-sticky", action="store_true",
                   help="also report the NoFrameskip-v4 protocol (always done for an agent trained on it)")
    p.add_argument("--out-dir", default=CHECKPOINTS, help="where to ship (default checkpoints/)")
    p.add_argument("--force", action="store_true", help="ship even if not better than the shipped one")
    p.add_argument("--workers", type=int, default=0,
                   help="spread the evaluation games over N Ray actors, as scripts.evaluate --workers does")
    p.add_argument("--ray-address", default="", help="with --workers: join this Ray cluster (default: a local Ray)")
    p.add_argument("--average", type=int, default=1, metavar="K",
                   help="ship the mean weights of the run's last K saves: checkpoint.npz and the K-1 snapshots "
                        "before it (train with --keep-snapshots; default 1: the checkpoint alone)")
    return p


def averaged_with(run_dir, checkpoint, k):
    """The k-1 snapshots of run_dir saved before checkpoint, oldest first; UsageError if there are fewer."""
    from agents.run import checkpoint_header, snapshot_paths
    if k < 1:
        raise UsageError(f"--average must be >= 1, got {k}")
    if k == 1:
        return []
    import agents
    try:
        step = checkpoint_header(checkpoint).get("step")
        earlier = [p for p in snapshot_paths(run_dir) if checkpoint_header(p).get("step") < step]
    except (agents.CheckpointError, TypeError):
        raise UsageError(f"{run_dir}: a damaged checkpoint or snapshot, cannot average") from None
    if len(earlier) < k - 1:
        raise UsageError(f"--average {k}: {run_dir}/snapshots holds {len(earlier)} snapshots before the "
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
    """Markdown lines setting the agent's scores (results on one protocol) beside the published ones,
    [] for other games."""
    from agents.evaluation import REFERENCE_SCORES, human_normalized
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
    from nets.data import sha256_of
    for path in (init["path"], os.path.join(os.path.dirname(CHECKPOINTS), init["path"])):
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


def averaged(header):
    """The card's sentence on weight averaging (ship --average), empty for a single checkpoint."""
    steps = header.get("averaged_steps")
    if not steps:
        return ""
    return (f" Its weights are the mean of the run's last {len(steps)} saves, at steps "
            f"{', '.join(f'{s:,}' for s in steps)} (`scripts.ship --average {len(steps)}`, as in SWA, "
            "Izmailov et al. 2018); the evaluation below is of those mean weights.")


def card(name, config, header, results, curve_name, seed, workers=0, scored=None, earlier=None):
    """The markdown card; earlier: the --init checkpoint's own commands (earlier_commands)."""
    def shell(argv):
        return " ".join(["python", "-m", "scripts.train", *argv[1:]])
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
             f"{seconds / 3600:.2f} hours ({seconds:,.0f} s) of wall clock on a 2-core CPU "
             f"machine.{trained}{averaged(header)}", "",
             "## How it was trained", "", "```bash", command, "```", "",
             "Settings (from the run's config.json):", "", "```json",
             json.dumps(config.get("config", {}), indent=1, sort_keys=True), "```", "",
             "## Evaluation", "",
             "Whole games on fresh seeds, printed by `python -m scripts.evaluate "
             f"checkpoints/{name}.npz --episodes {results[0]['episodes']} --seed {seed}"
             f"{f' --workers {workers}' if workers else ''}` (`--no-sticky` for NoFrameskip-v4, `--greedy` for the "
             "best action every step: a policy-gradient agent's most likely one, DQN's argmax without the "
             f"evaluation epsilon's random moves; `--epsilon {SB3_EPSILON:g}` for DQN's random moves at SB3's zoo's "
             "final exploration)"
             + (". With workers each game draws its random actions from its own seed, so it differs from the "
                "same game played without them" if workers else "") + ":", ""]
    for r in results:
        lines += ["```json", json.dumps(r), "```", ""]
    lines += references(header["env"]["env_id"], scored or results[:1])
    lines += ["## Learning curve", "", f"![learning curve]({curve_name})", ""]
    if init:
        lines[-1:-1] = ["", "The curve is of the last run, the one continued from the `--init` weights."]
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.episodes < 1:
            raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
        check_workers(args.workers, args.ray_address)
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", args.name):
            raise UsageError(f"--name {args.name!r}: use lower-case letters, digits, - and _")
        src = os.path.join(args.run_dir, "checkpoint.npz")
        if not os.path.isdir(args.run_dir) or not os.path.exists(src):
            raise UsageError(f"{args.run_dir}: not a run dir with a checkpoint.npz")
        try:
            with open(os.path.join(args.run_dir, "config.json")) as f:
                config = json.load(f)
            if not isinstance(config, dict):
                raise ValueError("not an object")
        except (OSError, ValueError):
            raise UsageError(f"{args.run_dir}: missing or damaged config.json") from None
        import agents
        from agents.run import export_for_playing
        init = init_record(config)
        average = averaged_with(args.run_dir, src, args.average)
        os.makedirs(args.out_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=args.out_dir, prefix=".ship-")
        staged = os.path.join(tmp, f"{args.name}.npz")
        try:
            header = export_for_playing(src, staged, before=init, average=average)
        except agents.CheckpointError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UsageError(str(e)) from None
        agent = load_agent(staged, args.seed)
    except UsageError as e:
        fail(str(e))
    from agents.evaluation import action_rule, evaluate, play_rule
    from envs import env_spec
    results = []
    # a policy-gradient agent is scored sampling its actions (the policy it learned, and what the
    # comparison with a shipped card uses) and also taking the most likely one (SB3's deterministic
    # evaluation), on the same seeds. DQN at its evaluation epsilon (Nature's 0.05, the comparison's)
    # and at SB3_EPSILON, not greedy: its greedy games can stall (Breakout waits for a FIRE until
    # ALE's 108,000-frame cap); `scripts.evaluate --greedy` has them
    def row(k, ret, length):
        print(f"game {k + 1:3d}  return {ret:6.1f}  length {length}", file=sys.stderr, flush=True)

    trained = agent.env.get("protocol")
    for sticky in ([True, False] if args.no_sticky or trained == "v4-nosticky" else [True]):
        for greedy, epsilon in play_rules(agent):
            # a freshly seeded agent for each row, as `scripts.evaluate --seed` starts with: each JSON
            # line on the card is then exactly what that command prints, whichever rows came before
            fresh = load_agent(staged, args.seed)
            explore = play_rule(fresh, greedy, epsilon)
            if args.workers:
                from agents import distributed
                try:
                    summary = distributed.evaluate(staged, args.episodes, seed=args.seed, sticky=sticky,
                                                   greedy=greedy, epsilon=epsilon, workers=args.workers,
                                                   ray_address=args.ray_address, on_game=row)
                except distributed.WorkerError as e:
                    shutil.rmtree(tmp, ignore_errors=True)
                    fail(str(e))
            else:
                summary = evaluate(fresh, args.episodes, seed=args.seed, sticky=sticky, explore=explore, on_game=row)
            protocol = env_spec(agent.env["env_id"], agent.env["preset"], sticky)["protocol"]
            results.append({"checkpoint": f"checkpoints/{args.name}.npz", "game": agent.env["env_id"],
                            "protocol": protocol, "actions": action_rule(fresh, explore), "episodes": args.episodes,
                            **{k: summary[k] for k in ("mean_return", "std_return", "min_return", "max_return")}})
            print(json.dumps(results[-1]))
    card_path = os.path.join(args.out_dir, f"{args.name}.md")
    earlier = earlier_commands(init) if init else None
    protocol, new, old = comparison(results, shipped_scores(card_path), trained)
    if old is not None and new <= old and not args.force:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"not shipped: mean {new:.2f} ({protocol}) is not better than the shipped {old:.2f} "
              "(--force ships anyway)", file=sys.stderr)
        return 1
    header["env"] = agent.env
    curve_name = f"{args.name}.png"
    curve_src = os.path.join(args.run_dir, "curve.png")
    if os.path.exists(curve_src):
        shutil.copyfile(curve_src, os.path.join(tmp, curve_name))
        os.replace(os.path.join(tmp, curve_name), os.path.join(args.out_dir, curve_name))
    os.replace(staged, os.path.join(args.out_dir, f"{args.name}.npz"))
    with open(os.path.join(tmp, "card.md"), "w") as f:
        scored = [r for r in results if r["protocol"] == protocol]
        f.write(card(args.name, config, header, results, curve_name, args.seed, args.workers, scored, earlier))
    os.replace(os.path.join(tmp, "card.md"), card_path)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"shipped {args.out_dir}/{args.name}.npz (mean {new:.2f} {protocol}"
          f"{'' if old is None else f', was {old:.2f}'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
