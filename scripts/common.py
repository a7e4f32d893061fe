"""What every script shares: one-line errors with exit code 2, dataclass configs as flags."""
import argparse
import dataclasses
import sys


class UsageError(Exception):
    """A mistake the person can fix: printed as one line, exit code 2."""


def fail(message, code=2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def load_agent(path, seed):
    """agents.load, with a bad checkpoint as a UsageError (one line, exit 2)."""
    import agents
    try:
        return agents.load(path, seed=seed)
    except agents.CheckpointError as e:
        raise UsageError(str(e)) from None


def check_record_dir(agent, record):
    """--record DIR: only Atari games are recorded, and DIR must be (or become) a folder."""
    import os
    if not agent.env["env_id"].startswith("ALE/"):
        raise UsageError(f"--record: recordings are for Atari games, not {agent.env['env_id']}")
    if os.path.exists(record) and not os.path.isdir(record):
        raise UsageError(f"--record {record}: exists and is not a directory")


def check_workers(workers, ray_address):
    """--workers N [--ray-address A]: Ray is an optional extra, so say so before anything starts."""
    import importlib.util
    if workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    if ray_address and not workers:
        raise UsageError("--ray-address needs --workers N")
    if workers and importlib.util.find_spec("ray") is None:
        raise UsageError('--workers needs Ray: pip install -e ".[distributed]"')


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)")


def add_greedy_flag(parser):
    """--greedy of the scripts that play a checkpoint (agents.evaluation.play_rule)."""
    parser.add_argument("--greedy", action="store_true",
                        help="take the best action every step: policy gradient the most likely instead of "
                             "sampling, DQN its argmax without the evaluation epsilon's random moves (a game "
                             "where the agent never serves, as Breakout can, runs to ALE's 108,000-frame cap)")


def add_epsilon_flag(parser):
    """--epsilon of the scripts that score or show a DQN checkpoint (agents.evaluation.play_rule)."""
    parser.add_argument("--epsilon", type=float, default=None, metavar="E",
                        help="DQN: a random move with probability E each step instead of the checkpoint's "
                             "evaluation epsilon (Nature's 0.05); 0.01 is the final exploration that SB3's "
                             "zoo evaluates Atari DQN at and CleanRL's training curves report")


def play_rule_from_flags(agent, args):
    """agents.evaluation.play_rule with --greedy and --epsilon; a bad combination is a UsageError."""
    from agents.evaluation import play_rule
    try:
        return play_rule(agent, args.greedy, args.epsilon)
    except ValueError as e:
        raise UsageError(f"--epsilon: {e}") from None


def add_config_flags(parser, cls, skip=()):
    """One --flag per dataclass field (underscores become dashes), defaulting to None = unchanged."""
    group = parser.add_argument_group(f"{cls.__module__.split('.')[-1]} settings")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if f.type in (bool, "bool"):
            group.add_argument(flag, dest=f.name, type=parse_bool, default=None, metavar="{true,false}",
                               help=f"(default {default})")
        else:
            kind = {"int": int, "float": float, "str": str}.get(getattr(f.type, "__name__", f.type), str)
            group.add_argument(flag, dest=f.name, type=kind, default=None, help=f"(default {default})")


def parse_bool(text):
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_from_args(cls, args, base=None):
    """Dataclass from base (or defaults) with every flag the person gave applied."""
    cfg = base or cls()
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
               if getattr(args, f.name, None) is not None}
    return dataclasses.replace(cfg, **changes)
