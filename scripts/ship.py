"""Ship a trained agent: python -m scripts.ship RUN_DIR --name pong-pg [--episodes 30] [--seed S] [--workers N].

Exports the run's checkpoint with only what playing needs (float32 policy or online Q-network),
evaluates it on --episodes fresh games with scripts.evaluate's protocol, and writes
checkpoints/<name>.npz, <name>.md (the card: agents/ship.py) and <name>.png (the learning curve
against agent steps and wall-clock minutes, with --compare beside other runs).
It refuses, exit 1, unless the new agent scores better than the card of the one already shipped, on
the protocol the agent trained on (--force overrides).
"""
import json
import os
import re
import sys

from agents.evaluation import action_rule, play_rule
from agents.run import CheckpointError, read_run_record
from agents.ship import CHECKPOINTS, Staged, comparison, play_rules, shipped_path, shipped_scores
from envs import env_spec
from scripts.common import (Parser, UsageError, add_blas_threads_flag, add_worker_flags, blas_threads,
                            check_scoring_flags, fail, load_agent, play_games, seed_value)


def build_parser():
    p = Parser(prog="python -m scripts.ship", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run dir holding checkpoint.npz, config.json and progress.csv")
    p.add_argument("--name", required=True, help="shipped name, e.g. pong-pg (checkpoints/<name>.npz)")
    p.add_argument("--episodes", type=int, default=30, help="evaluation games (default 30)")
    p.add_argument("--seed", type=seed_value, default=1000, help="seed of the first evaluation game")
    p.add_argument("--no-sticky", action="store_true",
                   help="also report the NoFrameskip-v4 protocol (always done for an agent trained on it)")
    p.add_argument("--out-dir", default=CHECKPOINTS, help="where to ship (default checkpoints/)")
    p.add_argument("--force", action="store_true", help="ship even if not better than the shipped one")
    add_worker_flags(p, "evaluation games, as scripts.evaluate --workers does")
    add_blas_threads_flag(p, "auto: both cores of an idle machine, 1 while another process keeps a core busy")
    p.add_argument("--compare", action="append", default=[], metavar="RUN_DIR",
                   help="another run dir drawn beside this one on the card's curve (against steps and wall-clock "
                        "minutes), named by its folder, its command under the picture; repeat for more")
    p.add_argument("--average", type=int, default=1, metavar="K",
                   help="ship the mean weights of the run's last K saves: checkpoint.npz and the K-1 snapshots "
                        "before it (train with --keep-snapshots; default 1: the checkpoint alone)")
    return p


def stage(args):
    """The run's playing weights, exported beside --out-dir; UsageError for a run dir that has none."""
    check_scoring_flags(args)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", args.name):
        raise UsageError(f"--name {args.name!r}: use lower-case letters, digits, - and _")
    if not os.path.isfile(os.path.join(args.run_dir, "checkpoint.npz")):
        raise UsageError(f"{args.run_dir}: not a run dir with a checkpoint.npz")
    compare = []
    for other in args.compare:
        if not os.path.isfile(os.path.join(other, "progress.csv")):
            raise UsageError(f"--compare {other}: not a run dir (no progress.csv)")
        try:
            read_run_record(other)
        except ValueError as e:
            raise UsageError(f"--compare {e}") from None
        compare.append((os.path.basename(os.path.normpath(other)), other))
    try:
        return Staged(args.run_dir, read_run_record(args.run_dir), args.out_dir, args.name, args.average, compare)
    except (CheckpointError, ValueError) as e:
        raise UsageError(str(e).splitlines()[0]) from None
    except OSError as e:  # --out-dir unwritable, or a disk that filled up
        raise UsageError(f"--out-dir {args.out_dir}: cannot write there ({e.strerror or e})") from None


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        staged = stage(args)
        agent = load_agent(staged.path, args.seed)
    except UsageError as e:
        fail(str(e))

    def row(k, ret, length):
        print(f"game {k + 1:3d}  return {ret:6.1f}  length {length}", file=sys.stderr, flush=True)

    # a policy-gradient agent is scored sampling its actions (the policy it learned, and what the
    # comparison with a shipped card uses) and also taking the most likely one (SB3's deterministic
    # evaluation), on the same seeds. DQN at its evaluation epsilon (Nature's 0.05, the comparison's)
    # and at SB3_EPSILON, not greedy: its greedy games can stall (Breakout waits for a FIRE until
    # ALE's 108,000-frame cap); `scripts.evaluate --greedy` has them
    results, trained = [], agent.env.get("protocol")
    with blas_threads(args.blas_threads) as threads:
        for sticky in ([True, False] if args.no_sticky or trained == "v4-nosticky" else [True]):
            for greedy, epsilon in play_rules(agent):
                # a freshly seeded agent for each row, as `scripts.evaluate --seed` starts with: each JSON
                # line on the card is then exactly what that command prints, whichever rows came before
                fresh = load_agent(staged.path, args.seed)
                explore = play_rule(fresh, greedy, epsilon)
                try:
                    summary = play_games(staged.path, fresh, args, sticky, greedy, epsilon, explore, row,
                                         threads=threads)
                except UsageError as e:  # no cluster, or actors that keep dying: nothing is shipped
                    staged.drop()
                    fail(str(e))
                protocol = env_spec(agent.env["env_id"], agent.env["preset"], sticky)["protocol"]
                results.append({"checkpoint": shipped_path(args.out_dir, args.name), "game": agent.env["env_id"],
                                "protocol": protocol, "actions": action_rule(fresh, explore),
                                "episodes": args.episodes,
                                **{k: summary[k] for k in ("mean_return", "std_return", "min_return", "max_return")}})
                print(json.dumps(results[-1]))
    protocol, new, old = comparison(results, shipped_scores(staged.card_path), trained)
    if old is not None and new <= old and not args.force:
        staged.drop()
        print(f"not shipped: mean {new:.2f} ({protocol}) is not better than the shipped {old:.2f} "
              "(--force ships anyway)", file=sys.stderr)
        return 1
    try:
        staged.publish(agent.env, results, args.seed, args.workers, protocol)
    except OSError as e:
        staged.drop()
        fail(f"--out-dir {args.out_dir}: cannot write there ({e.strerror or e})")
    print(f"shipped {args.out_dir}/{args.name}.npz (mean {new:.2f} {protocol}"
          f"{'' if old is None else f', was {old:.2f}'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
