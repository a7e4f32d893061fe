"""Benchmarks: python -m scripts.bench <subcommand> [flags].

Each subcommand lives in its own module with `add_arguments(parser)` and `main(args) -> int`;
add one line to SUBCOMMANDS to add one. Only the chosen module is imported, so a benchmark never
pays for another's imports. Figures are medians; trust ratios measured in one run, not absolute times.
"""
import argparse
import importlib
import sys

# subcommand -> (module with add_arguments(parser) and main(args), one-line help)
SUBCOMMANDS = {
    "nets": ("scripts.bench_nets", "numpy networks (MLP, Nature-DQN) against PyTorch when importable"),
    "pg": ("scripts.bench_pg", "policy-gradient training steps/s next to the raw steps/s of its envs"),
    "envs": ("scripts.bench_envs", "agent steps/s: raw ALE, each preset, make_vector with 1-8 envs"),
    "dqn": ("scripts.bench_dqn", "DQN training steps/s on Pong with learning on, and where the time goes; "
                                 "--vs-torch: the loop beside the same loop in PyTorch"),
    "ppo": ("scripts.bench_ppo", "PPO's rollout + update loop: steps/s beside its envs alone and beside PyTorch"),
    "threads": ("scripts.bench_threads", "the default BLAS thread policy against 1 and 2 threads, with and without "
                                         "a CPU-burning process beside it"),
    "evaluate": ("scripts.bench_evaluate", "scripts.evaluate's time per step against its env alone plus one "
                                           "batch-1 act per step, with and without a CPU-burning process"),
    "scale": ("scripts.bench_scale", "PG or PPO rollout steps/s on 1, 2, 4 Ray actors next to one process; "
                                     "broadcast ms"),
}


class OneLineParser(argparse.ArgumentParser):
    """Errors are one line and exit 2, as every script's edge errors are."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser(chosen=None):
    parser = OneLineParser(prog="python -m scripts.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = make_parser(chosen if chosen in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    args.argv = list(argv)  # a benchmark may run itself again in a child process (--kernel)
    if args.command is None:
        parser.error(f"choose a subcommand: {', '.join(SUBCOMMANDS)}")
    return importlib.import_module(SUBCOMMANDS[args.command][0]).main(args)


if __name__ == "__main__":
    sys.exit(main())
