"""Evaluate a checkpoint on whole games: python -m scripts.evaluate CHECKPOINT --episodes N --seed S.

Prints one row per game and, as its last line, one JSON object with the mean, std, min and max return.
"""
import json
import sys

from agents.evaluation import action_rule
from envs import env_spec
from scripts.common import (Parser, UsageError, add_blas_threads_flag, add_epsilon_flag, add_greedy_flag,
                            add_worker_flags, blas_threads, check_record_dir, check_scoring_flags, fail, load_agent,
                            play_games, play_rule_from_flags, seed_value, writable_folder)


def build_parser():
    p = Parser(prog="python -m scripts.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="an agent checkpoint (.npz)")
    p.add_argument("--episodes", type=int, default=10, help="whole games to play (default 10)")
    p.add_argument("--seed", type=seed_value, default=0, help="seed of the first game; game k uses seed+k")
    p.add_argument("--no-sticky", action="store_true",
                   help="NoFrameskip-v4 protocol (no sticky actions) instead of ALE v5's")
    p.add_argument("--record", metavar="DIR", help="save every game as a recording in DIR")
    add_greedy_flag(p)
    add_epsilon_flag(p)
    add_worker_flags(p, "games")
    add_blas_threads_flag(p, "auto: both cores of an idle machine, 1 while another process keeps a core busy")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_scoring_flags(args)
        if args.workers and args.record:
            raise UsageError("--record writes the games where they are played: drop --workers to record")
        agent = load_agent(args.checkpoint, args.seed)
        explore = play_rule_from_flags(agent, args)
        if args.record:
            check_record_dir(agent, args.record)
            writable_folder("--record", args.record)
    except UsageError as e:
        fail(str(e))

    def row(k, ret, length):
        print(f"game {k + 1:3d}  seed {args.seed + k:6d}  return {ret:7.1f}  length {length:6d}", flush=True)

    try:
        with blas_threads(args.blas_threads) as threads:
            summary = play_games(args.checkpoint, agent, args, not args.no_sticky, args.greedy, args.epsilon,
                                 explore, row, record=args.record, message=lambda text: print(text, file=sys.stderr),
                                 threads=threads)
    except UsageError as e:
        fail(str(e))
    protocol = env_spec(agent.env["env_id"], agent.env["preset"], not args.no_sticky)["protocol"]
    result = {"checkpoint": args.checkpoint, "game": agent.env["env_id"], "protocol": protocol,
              "actions": action_rule(agent, explore),
              "episodes": args.episodes, **{k: summary[k] for k in
                                            ("mean_return", "std_return", "min_return", "max_return")}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
