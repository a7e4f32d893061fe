"""Train an agent: python -m scripts.train [--agent pg|dqn] [--game pong] [flags].

With no arguments it trains Karpathy's policy-gradient agent on Pong from pixels. The run dir gets
config.json, progress.csv, metrics.csv, checkpoint.npz (every few minutes and on Ctrl-C / SIGTERM)
and curve.png;
--resume RUN_DIR continues a run exactly where its checkpoint left it.
"""
import dataclasses
import importlib
import json
import os
import sys
import time

from scripts.common import Parser, UsageError, add_config_flags, check_workers, config_from_args, fail

AGENTS = {"pg": "agents.policy_gradient", "dqn": "agents.dqn", "ppo": "agents.ppo"}


def agent_module(name):
    if name not in AGENTS:
        raise UsageError(f"unknown agent {name!r}: choose one of {', '.join(AGENTS)}")
    return importlib.import_module(AGENTS[name])


def build_parser(module):
    p = Parser(prog="python -m scripts.train", description=__doc__.splitlines()[0])
    # default None: the agent is settled before this parser runs (a resumed run keeps its own)
    p.add_argument("--agent", choices=list(AGENTS), default=None, help="algorithm (default pg)")
    p.add_argument("--run-dir", help="where the run writes (default runs/<game>-<agent>-<seed>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--init", metavar="CHECKPOINT", help="start from the weights of a checkpoint")
    p.add_argument("--list-games", action="store_true", help="list every game name and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="OpenBLAS threads (default: 1 for pg, whose envs use the cores; 2 for dqn)")
    skip = ("agent",) + getattr(module, "HIDDEN_FLAGS", ())
    add_config_flags(p, module.Config, skip=skip)
    return p


def list_games():
    import envs
    for name, env_id in envs.ale_games().items():
        print(f"{name:24s} {env_id}")
    for env_id in envs.atari.classic_games():
        print(f"{env_id:24s} {env_id}")


def load_run_config(run_dir):
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise UsageError(f"--resume {run_dir}: no such run dir")
    try:
        with open(path) as f:
            record = json.load(f)
        return record["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"--resume {run_dir}: missing or damaged config.json") from None


def check_compatible(header, cfg, env, path):
    """A checkpoint must be for the same agent, game and preset as the run it starts."""
    other = header.get("env", {})
    if header.get("agent") != cfg.agent:
        raise UsageError(f"{path} is a {header.get('agent')} checkpoint, not {cfg.agent}")
    if other.get("env_id") != env["env_id"] or other.get("preset") != env["preset"]:
        raise UsageError(f"{path} is for {other.get('env_id')} ({other.get('preset')}), "
                         f"not {env['env_id']} ({env['preset']})")


# settings that shape the network: an --init checkpoint decides them unless the flag is given
NETWORK_FIELDS = ("hidden", "head", "network", "dueling", "quantiles")


def network_from_checkpoint(module, cfg, args, header, path):
    saved = header.get("config", {}) if isinstance(header.get("config"), dict) else {}
    saved = {"quantiles": 0, **saved}  # a DQN file from before QR-DQN holds one value per action
    changes = {}
    for name in NETWORK_FIELDS:
        if name not in saved or not hasattr(cfg, name):
            continue
        given = getattr(args, name, None)
        if name == "quantiles" and given and not saved[name]:
            changes[name] = given  # a plain DQN file starts a QR network (agents.dqn.init_weights)
            continue
        if given is not None and given != saved[name] and not (name == "head" and given == "auto"):
            raise UsageError(f"--{name} {given} does not fit {path}, whose network has {name} {saved[name]}")
        changes[name] = saved[name]
    try:
        return module.resolved(dataclasses.replace(cfg, **changes))
    except ValueError as e:
        raise UsageError(f"{path}: {str(e).splitlines()[0]}") from None


class ProgressBar:
    """tqdm bar: steps, steps/s, episodes, last and running return."""

    def __init__(self, total, initial, quiet):
        from tqdm import tqdm
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


def set_blas_threads(threads, agent):
    """Must run before numpy loads: OpenBLAS reads its thread count once. With more busy threads
    than cores (the emulators' threads), its spinning workers made a batch-8 GEMM 20x slower."""
    if threads is not None and threads < 1:
        raise UsageError(f"--blas-threads must be >= 1, got {threads}")
    if "numpy" in sys.modules:
        return
    if threads is None:
        threads = 1 if agent == "pg" else 2
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def check_ray(cfg):
    """--workers and --ray-address, checked before the run dir exists."""
    check_workers(cfg.workers, cfg.ray_address)
    if cfg.ray_address:  # before the run dir exists: an address nobody answers at is a typo
        from agents.distributed import check_reachable
        try:
            check_reachable(cfg.ray_address)
        except ConnectionError as e:
            raise UsageError(f"--ray-address {cfg.ray_address}: {e}") from None


def init_summary(path, header):
    """What an --init checkpoint brings to a run's record: which file (and its sha256) and the
    training it holds, its own plus what it was itself continued from ("trained_before")."""
    from nets.data import sha256_of
    before = header.get("trained_before") if isinstance(header.get("trained_before"), dict) else {}
    def total(key, kind):
        values = [record.get(key, 0) for record in (header, before)]
        return kind(sum(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)))
    return {"path": path, "sha256": sha256_of(path), "step": total("step", int), "episode": total("episode", int),
            "wall_seconds": total("wall_seconds", float)}


def prepare(argv):
    """Parse flags into (module, cfg, run_dir, init, resume); UsageError for anything wrong."""
    pre = Parser(add_help=False)
    pre.add_argument("--agent", default="pg")
    pre.add_argument("--resume")
    pre.add_argument("--blas-threads", type=int)
    known, _ = pre.parse_known_args(argv)
    base = None
    if known.resume:  # a resumed run's agent picks the thread count, not --agent's default
        saved = load_run_config(known.resume)
        known.agent = saved.get("agent", known.agent)
    set_blas_threads(known.blas_threads, known.agent)
    module = agent_module(known.agent)
    args = build_parser(module).parse_args(argv)
    if args.list_games:
        return None
    if known.resume:
        fields = {f.name for f in dataclasses.fields(module.Config)}
        base = module.Config(**{k: v for k, v in saved.items() if k in fields})
    try:
        cfg = module.resolved(config_from_args(module.Config, args, base))
    except ValueError as e:  # unknown game, bad preset or value
        raise UsageError(str(e).splitlines()[0]) from None
    check_ray(cfg)
    import envs
    env = envs.env_spec(cfg.game, cfg.preset, cfg.sticky)
    from agents.run import load_checkpoint
    from nets import CheckpointError
    init = resume = init_record = None
    if args.init:
        try:
            models, header, _ = load_checkpoint(args.init)
        except CheckpointError as e:
            raise UsageError(str(e)) from None
        check_compatible(header, cfg, env, args.init)
        cfg = network_from_checkpoint(module, cfg, args, header, args.init)
        init = (models, header)
        init_record = init_summary(args.init, header)
    run_dir = args.run_dir
    if known.resume:
        run_dir = known.resume
        path = os.path.join(run_dir, "checkpoint.npz")
        if not os.path.exists(path):
            raise UsageError(f"--resume {run_dir}: no checkpoint.npz to resume from")
        try:
            resume = load_checkpoint(path)
        except CheckpointError as e:
            raise UsageError(str(e)) from None
        check_compatible(resume[1], cfg, env, path)
    elif run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        game = env["env_id"].split("/")[-1].split("-")[0].lower()
        run_dir = os.path.join("runs", f"{game}-{cfg.agent}-{cfg.seed}-{stamp}")
    elif os.path.exists(os.path.join(run_dir, "checkpoint.npz")):
        raise UsageError(f"{run_dir} already holds a run: use --resume {run_dir} or another --run-dir")
    return module, cfg, env, run_dir, init, resume, init_record, args.quiet


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        prepared = prepare(argv)
        if prepared is None:
            list_games()
            return 0
        module, cfg, env, run_dir, init, resume, init_record, quiet = prepared
        from agents.run import Run, config_dict
        try:
            run = Run(run_dir, config_dict(cfg), env, cfg.checkpoint_minutes, keep_snapshots=cfg.keep_snapshots)
            run.write_config(resume[1].get("step", 0) if resume else 0, init_record)
        except OSError as e:
            raise UsageError(f"cannot write the run dir {run_dir}: {e.strerror or e}") from None
    except UsageError as e:
        fail(str(e))
    bar = ProgressBar(cfg.total_steps, resume[1].get("step", 0) if resume else 0, quiet)
    run.message = bar.write
    print(f"run dir: {run.dir}", file=sys.stderr)
    worker_errors = ()
    if cfg.workers:
        from agents.distributed import WorkerError
        worker_errors = (WorkerError,)
    try:
        with run:
            module.train(cfg, run, callback=bar, init=init, resume=resume)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted twice: stopped without saving; last checkpoint: {run.checkpoint_path}",
              file=sys.stderr)
        return 130
    except module.NumericalError as e:
        bar.close()
        fail(str(e), code=1)
    except worker_errors as e:  # no cluster at --ray-address, actors that cannot start
        bar.close()
        fail(str(e))
    bar.close()
    why = "stopped by signal" if run.stop_requested else "finished"
    print(f"{why}: step {run.step}, episode {run.episode}; saved {run.checkpoint_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
