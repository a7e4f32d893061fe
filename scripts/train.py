"""Train an agent: python -m scripts.train [--agent pg|dqn|ppo] [--game pong] [flags].

With no arguments it trains Karpathy's policy-gradient agent on Pong from pixels. The run dir gets
config.json, progress.csv, metrics.csv, checkpoint.npz (every few minutes and on Ctrl-C / SIGTERM)
and curve.png; --resume RUN_DIR continues a run exactly where its checkpoint left it. With --workers N
the agent's envs step on Ray actors instead of in this process (its train() picks the source).
"""
import dataclasses
import os
import sys
import time

from tqdm import tqdm

import envs
from agents import distributed, dqn, ppo
from agents import policy_gradient as pg
from agents.run import (NETWORK_FIELDS, CheckpointError, NumericalError, Run, check_compatible, config_dict,
                        init_summary, load_checkpoint, load_run_config, network_from_checkpoint)
from scripts.common import (Parser, UsageError, add_blas_threads_flag, add_config_flags, blas_threads, check_workers,
                            config_from_args, fail)

AGENTS = {"pg": pg, "dqn": dqn, "ppo": ppo}


def agent_module(name):
    if name not in AGENTS:
        raise UsageError(f"unknown agent {name!r}: choose one of {', '.join(AGENTS)}")
    return AGENTS[name]


def build_parser(module):
    p = Parser(prog="python -m scripts.train", description=__doc__.splitlines()[0])
    # default None: the agent is settled before this parser runs (a resumed run keeps its own)
    p.add_argument("--agent", choices=list(AGENTS), default=None, help="algorithm (default pg)")
    p.add_argument("--run-dir", help="where the run writes (default runs/<game>-<agent>-<seed>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--init", metavar="CHECKPOINT", help="start from the weights of a checkpoint")
    p.add_argument("--list-games", action="store_true", help="list every game name and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_blas_threads_flag(p, "1 for pg, whose envs use the cores; for dqn and ppo auto: both cores of an idle "
                             "machine, 1 while another process keeps a core busy")
    skip = ("agent",) + getattr(module, "HIDDEN_FLAGS", ())
    add_config_flags(p, module.Config, skip=skip)
    return p


def list_games():
    for name, env_id in envs.ale_games().items():
        print(f"{name:24s} {env_id}")
    for env_id in envs.atari.classic_games():
        print(f"{env_id:24s} {env_id}")


class ProgressBar:
    """tqdm bar: steps, steps/s, episodes, last and running return."""

    def __init__(self, total, initial, quiet):
        self.bar = tqdm(total=total or None, initial=initial, unit="step", unit_scale=True,
                        dynamic_ncols=True, disable=quiet, mininterval=1.0, smoothing=0.05)
        self.last_step = initial
        self.postfix = {}

    def __call__(self, m):
        self.bar.update(m["step"] - self.last_step)
        self.last_step = m["step"]
        if m["event"] == "episode":
            self.postfix.update(ep=m["episode"], ret=f"{m['return']:g}", mean=f"{m['running_mean']:.2f}")
        elif m["event"] == "eval":
            self.postfix.update(eval=f"{m['mean_return']:.2f}")
        self.bar.set_postfix(self.postfix, refresh=False)

    def write(self, text):
        self.bar.write(text, file=sys.stderr)

    def close(self):
        self.bar.close()


def first_flags(argv):
    """--agent, --resume and --blas-threads, read before the agent's own flags exist; a resumed run
    keeps its own agent (and its settings: `saved`)."""
    pre = Parser(add_help=False)
    pre.add_argument("--agent", default="pg")
    pre.add_argument("--resume")
    pre.add_argument("--blas-threads", type=int)
    known, _ = pre.parse_known_args(argv)
    known.saved = None
    if known.resume:
        try:
            known.saved = load_run_config(known.resume)
        except ValueError as e:
            raise UsageError(f"--resume {e}") from None
        known.agent = known.saved.get("agent", known.agent)
    return known


def check_ray(cfg):
    """--workers and --ray-address, checked before the run dir exists: an address nobody answers at is a typo."""
    check_workers(cfg.workers, cfg.ray_address)
    if cfg.ray_address:
        try:
            distributed.check_reachable(cfg.ray_address)
        except ConnectionError as e:
            raise UsageError(f"--ray-address {cfg.ray_address}: {e}") from None


def prepare(argv, first):
    """Parse flags into (module, cfg, run_dir, init, resume, init_record, quiet), None for --list-games;
    UsageError for anything wrong."""
    module = agent_module(first.agent)
    args = build_parser(module).parse_args(argv)
    if args.list_games:
        return None
    base = None
    if first.resume:
        fields = {f.name for f in dataclasses.fields(module.Config)}
        base = module.Config(**{k: v for k, v in first.saved.items() if k in fields})
    try:
        cfg = module.resolved(config_from_args(module.Config, args, base))
    except ValueError as e:  # unknown game, bad preset or value
        raise UsageError(str(e).splitlines()[0]) from None
    check_ray(cfg)
    env = envs.env_spec(cfg.game, cfg.preset, cfg.sticky)
    init = resume = init_record = None
    run_dir = first.resume or args.run_dir
    try:
        if args.init:
            models, header, _ = load_checkpoint(args.init)
            check_compatible(header, cfg, env, args.init)
            given = {name: getattr(args, name, None) for name in NETWORK_FIELDS}
            cfg = network_from_checkpoint(cfg, given, header, args.init, module.resolved)
            init, init_record = (models, header), init_summary(args.init, header)
        if first.resume:
            path = os.path.join(run_dir, "checkpoint.npz")
            if not os.path.exists(path):
                raise UsageError(f"--resume {run_dir}: no checkpoint.npz to resume from")
            resume = load_checkpoint(path)
            check_compatible(resume[1], cfg, env, path)
    except (CheckpointError, ValueError) as e:
        raise UsageError(str(e).splitlines()[0]) from None
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        game = env["env_id"].split("/")[-1].split("-")[0].lower()
        run_dir = os.path.join("runs", f"{game}-{cfg.agent}-{cfg.seed}-{stamp}")
    elif not first.resume and os.path.exists(os.path.join(run_dir, "checkpoint.npz")):
        raise UsageError(f"{run_dir} already holds a run: use --resume {run_dir} or another --run-dir")
    return module, cfg, env, run_dir, init, resume, init_record, args.quiet


def train(module, cfg, env, run_dir, init, resume, init_record, quiet, threads):
    """Make the run dir and train in it; the exit code. threads: the ThreadPolicy, polled every turn."""
    step = resume[1].get("step", 0) if resume else 0
    try:
        run = Run(run_dir, config_dict(cfg), env, cfg.checkpoint_minutes, keep_snapshots=cfg.keep_snapshots)
        run.write_config(step, init_record, blas_threads=threads.describe())
        run.between_steps = threads.poll
    except OSError as e:
        raise UsageError(f"cannot write the run dir {run_dir}: {e.strerror or e}") from None
    bar = ProgressBar(cfg.total_steps, step, quiet)
    run.message = bar.write
    print(f"run dir: {run.dir}", file=sys.stderr)
    try:
        with run:
            module.train(cfg, run, callback=bar, init=init, resume=resume)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted twice: stopped without saving; last checkpoint: {run.checkpoint_path}",
              file=sys.stderr)
        return 130
    except NumericalError as e:
        bar.close()
        fail(str(e), code=1)
    except distributed.WorkerError as e:  # no cluster at --ray-address, actors that cannot start
        bar.close()
        fail(str(e))
    bar.close()
    why = "stopped by signal" if run.stop_requested else "finished"
    print(f"{why}: step {run.step}, episode {run.episode}; saved {run.checkpoint_path}", file=sys.stderr)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        first = first_flags(argv)
        with blas_threads(first.blas_threads, default=1 if first.agent == "pg" else "auto") as threads:
            prepared = prepare(argv, first)
            if prepared is None:
                list_games()
                return 0
            return train(*prepared, threads)
    except UsageError as e:
        fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
