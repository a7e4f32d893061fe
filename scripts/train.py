"""Train an agent: python -m scripts.train [--agent pg|dqn|ppo] [--game pong] [--config RECIPE] [flags].

With no arguments it trains the default agent (DEFAULT_AGENT below) on Pong from pixels. --config reads a
recipe (hyperparams/*.yml, or a run's config.json to start a sibling run); flags given override it.
The run dir gets config.json, progress.csv, metrics.csv, eval.csv, checkpoint.npz (every few minutes
and on Ctrl-C, SIGTERM or SIGHUP) and curve.png; --tensorboard adds TensorBoard event files and
--capture-video recorded games in videos/. --resume RUN_DIR continues a run exactly where its
checkpoint left it. With --workers N the agent's envs step on Ray actors (its train() picks the source).
"""
import argparse
import csv
import dataclasses
import importlib.util
import os
import shutil
import sys
import time

from tqdm import tqdm

import envs
from agents import distributed, dqn, ppo
from agents import policy_gradient as pg
from agents.curve import read_progress
from agents.recipes import read_recipe, recipe_changes
from agents.run import (NETWORK_FIELDS, CheckpointError, NumericalError, Run, check_compatible, config_dict,
                        home_relative, init_summary, load_checkpoint, load_run_config, machine, machine_text,
                        network_from_checkpoint)
from scripts.common import (Parser, UsageError, add_blas_threads_flag, add_config_flags, blas_threads, check_workers,
                            config_from_args, fail, shown_default)

AGENTS = {"pg": pg, "dqn": dqn, "ppo": ppo}
DEFAULT_AGENT = "ppo"  # what `python -m scripts.train` trains without --agent
VIDEO_EVERY = 100  # default episodes between --capture-video games
BEATS_THE_AI = ("ALE/Pong-v5",)  # games whose return is the point difference against the built-in AI


def agent_module(name):
    if name not in AGENTS:
        raise UsageError(f"unknown agent {name!r}: choose one of {', '.join(AGENTS)}")
    return AGENTS[name]


def add_run_flags(p):
    """The flags of the command itself, the same for every agent."""
    # default None: the agent is settled before this parser runs (a resumed run keeps its own)
    p.add_argument("--agent", choices=list(AGENTS), default=None, help=f"algorithm (default {DEFAULT_AGENT})")
    p.add_argument("--config", metavar="RECIPE",
                   help="start from the settings in a recipe: hyperparams/<name>.yml, or a run's config.json "
                        "(or its run dir) for a sibling run; flags given override it")
    p.add_argument("--run-dir", help="where the run writes (default runs/<game>-<agent>-<seed>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--init", metavar="CHECKPOINT", help="start from the weights of a checkpoint")
    p.add_argument("--list-games", action="store_true", help="list every game the agents can play and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar (evaluations and messages still print)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files into the run dir: every scalar of progress.csv, "
                        "metrics.csv and eval.csv (needs the tensorboard extra)")
    p.add_argument("--capture-video", action="store_true",
                   help="record one evaluation game at the start, then every --video-every episodes, into "
                        "videos/ as mp4 (Atari)")
    p.add_argument("--video-every", type=int, default=None, metavar="N",
                   help=f"episodes between recorded games with --capture-video (default {VIDEO_EVERY})")
    add_blas_threads_flag(p, "1 for pg, whose envs use the cores; for dqn and ppo auto: both cores of an idle "
                             "machine, 1 while another process keeps a core busy")


def build_parser(module):
    p = Parser(prog="python -m scripts.train", description=__doc__.splitlines()[0])
    add_run_flags(p)
    name = module.Config().agent
    add_config_flags(p, module.Config, skip=("agent",) + getattr(module, "HIDDEN_FLAGS", ()),
                     choices=getattr(module, "CHOICES", {}),
                     title=f"{name} settings (python -m scripts.train --agent {name}; hyperparams/*.yml keys)")
    return p


def overview_help():
    """--help without --agent: the command's flags, then each agent's settings in a group of its own,
    after a list of the settings every agent has whose defaults differ between them."""
    configs = {name: module.Config() for name, module in AGENTS.items()}
    shared = [f.name for f in dataclasses.fields(pg.Config) if f.name != "agent"
              and all(hasattr(cfg, f.name) for cfg in configs.values())]
    differ = []
    for name in shared:
        values = {agent: shown_default(getattr(cfg, name)) for agent, cfg in configs.items()}
        if len(set(values.values())) > 1:
            differ.append(f"{name.replace('_', '-')} ({', '.join(f'{a} {v}' for a, v in values.items())})")
    p = Parser(prog="python -m scripts.train", formatter_class=argparse.RawDescriptionHelpFormatter,
               description=__doc__.split("\n\n")[0] + "\n\nEvery agent's settings follow in a group of its own "
               "(--agent NAME --help shows one). Defaults that differ between the agents:\n  "
               + "\n  ".join(differ))
    add_run_flags(p)
    text = p.format_help()
    for name, module in AGENTS.items():
        group = argparse.ArgumentParser(prog="", usage=argparse.SUPPRESS, add_help=False)
        note = " (the default agent)" if name == DEFAULT_AGENT else ""
        add_config_flags(group, module.Config, skip=("agent",) + getattr(module, "HIDDEN_FLAGS", ()),
                         choices=getattr(module, "CHOICES", {}),
                         title=f"{name} settings{note}: python -m scripts.train --agent {name}")
        text += "\n" + group.format_help()
    return text


def list_games():
    """Every game the agents can play, one a line: name, ALE v5 id (sticky actions), NoFrameskip-v4 id."""
    for name, env_id, no_sticky in envs.atari.playable_games():
        print(f"{name:24s} {env_id:28s} {no_sticky}".rstrip())


def duration(seconds):
    minutes = int(round(seconds / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class ProgressBar:
    """tqdm bar: steps against --total-steps (or, with --hours alone, the time against the hours) with
    the ETA, steps/s, episodes, last and running return; the evaluations, videos and, on Pong, the
    first time the agent beats the built-in AI, each on a line of its own. A terminal that went away
    (SIGHUP, a closed pipe) silences it; training goes on to its save."""

    def __init__(self, total_steps, hours, initial, quiet, env_id, trained_seconds=0.0, beaten=False):
        self.seconds = hours * 3600.0 if hours > 0 and not total_steps else 0.0
        self.started, self.first_step = time.monotonic(), initial
        self.trained = float(trained_seconds)  # a resumed run's hours count what it had trained before
        self.env_id, self.beaten, self.gone = env_id, beaten, False  # beaten: said before a resume
        if self.seconds:
            self.bar = tqdm(total=self.seconds, disable=quiet, dynamic_ncols=True, mininterval=1.0,
                            bar_format="{percentage:3.0f}%|{bar}| {elapsed}<{remaining} of --hours "
                                       f"{hours:g}" + "{postfix}")
        else:
            self.bar = tqdm(total=total_steps or None, initial=initial, unit="step", unit_scale=True,
                            dynamic_ncols=True, disable=quiet, mininterval=1.0, smoothing=0.05)
        self.last_step = initial
        self.postfix = {}

    def __call__(self, m):
        try:
            self.update(m)
        except OSError:
            self.terminal_gone()

    def update(self, m):
        if self.gone:
            return
        if self.seconds:
            elapsed = time.monotonic() - self.started
            self.bar.update(min(self.trained + elapsed, self.seconds) - self.bar.n)
            rate = (m["step"] - self.first_step) / max(elapsed, 1e-9)
            self.postfix.update(step=f"{m['step']:,}", rate=f"{rate:.0f}/s")
        else:
            self.bar.update(m["step"] - self.last_step)
        self.last_step = m["step"]
        if m["event"] == "episode":
            self.postfix.update(ep=m["episode"], ret=f"{m['return']:g}", mean=f"{m['running_mean']:.2f}")
            self.beats_the_ai(m)
        elif m["event"] == "eval":
            self.postfix.update(eval=f"{m['mean_return']:.2f}")
            self.write(f"evaluation at step {m['step']:,}: mean return {m['mean_return']:+.2f} "
                       f"(std {m['std_return']:.2f}) over {m['episodes']} games")
        elif m["event"] == "video":
            self.write(f"video of a game at episode {m['episode']:,} (return {m['return']:+g}): {m['path']}")
        self.bar.set_postfix(self.postfix, refresh=False)

    def beats_the_ai(self, m):
        """On Pong a return is the point difference against the built-in AI: say so once, the first time
        the mean of the last 100 games is above 0."""
        if self.beaten or self.env_id not in BEATS_THE_AI or m.get("games", 0) < 100 or m["running_mean"] <= 0:
            return
        self.beaten = True
        self.write(f"step {m['step']:,} ({duration(m.get('wall_seconds', 0.0))}): the running mean of the last "
                   f"100 games is {m['running_mean']:+.1f}: it beats the built-in AI")

    def write(self, text):
        if self.gone:
            return
        try:
            self.bar.write(text, file=sys.stderr)
        except OSError:
            self.terminal_gone()

    def terminal_gone(self):
        """Writes failed (the terminal closed): send what is left to /dev/null, so nothing else
        fails, the exit included."""
        self.gone = True
        silence_terminal()

    def close(self):
        try:
            self.bar.close()
        except OSError:
            self.terminal_gone()


def silence_terminal():
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        try:
            os.dup2(devnull, fd)
        except OSError:
            pass
    os.close(devnull)


def say(text):
    """A line on stderr that a closed terminal cannot turn into a traceback."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        silence_terminal()


def first_flags(argv):
    """--agent, --config, --resume, --init and --blas-threads, read before the agent's own flags exist; a
    resumed run keeps its own agent (and its settings: `saved`), a recipe names its agent."""
    pre = Parser(add_help=False)
    for flag in ("--agent", "--config", "--resume", "--init"):
        pre.add_argument(flag)
    pre.add_argument("--blas-threads", type=int)
    known, _ = pre.parse_known_args(argv)
    known.saved, known.recipe = None, None
    if known.resume and known.config:
        raise UsageError("--config starts a new run; --resume continues one with its own settings (flags given "
                         "override them)")
    if known.resume and known.init:
        raise UsageError("--init starts a new run from a checkpoint's weights; --resume continues a run from its "
                         "own checkpoint: give one of them")
    if known.resume:
        try:
            known.saved = load_run_config(known.resume)
        except ValueError as e:
            raise UsageError(f"--resume {e}") from None
        known.agent = known.saved.get("agent", known.agent or DEFAULT_AGENT)
    if known.config:
        try:
            known.recipe = read_recipe(known.config)
        except ValueError as e:
            raise UsageError(f"--config {e}") from None
        named = known.recipe.get("agent")
        if known.agent and named and known.agent != named:
            raise UsageError(f"--agent {known.agent} contradicts --config {known.config}, a recipe for {named}")
        known.agent = known.agent or named
    known.agent = known.agent or DEFAULT_AGENT
    return known


def check_ray(cfg):
    """--workers and --ray-address, checked before the run dir exists: an address nobody answers at is a typo."""
    check_workers(cfg.workers, cfg.ray_address)
    if cfg.ray_address:
        try:
            distributed.check_reachable(cfg.ray_address)
        except ConnectionError as e:
            raise UsageError(f"--ray-address {cfg.ray_address}: {e}") from None


def starting_config(module, args, first):
    """The Config the flags ask for, before resolving: a resumed run's own settings, else the recipe's,
    else the defaults, with the flags given on top; and where its protocol comes from. An Atari id
    that names a protocol (PongNoFrameskip-v4: no sticky actions) sets sticky unless it is given."""
    fields = {f.name for f in dataclasses.fields(module.Config)}
    base, recipe = module.Config(), {}
    if first.resume:
        base = module.Config(**{k: v for k, v in first.saved.items() if k in fields})
    elif first.recipe is not None:
        try:
            recipe = recipe_changes(module.Config, first.recipe, first.config)
        except ValueError as e:
            raise UsageError(f"--config {e}") from None
        base = dataclasses.replace(base, **recipe)
    cfg = config_from_args(module.Config, args, base)
    alias = envs.atari.atari_alias(cfg.game)
    if args.sticky is not None:
        source = "--sticky"
    elif first.resume:
        source = "the run resumed"
    elif "sticky" in recipe:
        source = f"--config {first.config}"
    elif alias is not None:
        cfg, source = dataclasses.replace(cfg, sticky=alias[1]), f"the env id {cfg.game}"
    else:
        source = f"the {cfg.agent} default"
    return cfg, source


def prepare(argv, first):
    """Parse flags into a dict of what train() needs, None for --list-games; UsageError for anything wrong."""
    module = agent_module(first.agent)
    args = build_parser(module).parse_args(argv)
    if args.list_games:
        return None
    cfg, protocol_from = starting_config(module, args, first)
    try:
        envs.atari.check_protocol(cfg.game, cfg.sticky)  # the id typed names a protocol: sticky may not say otherwise
        cfg = module.resolved(cfg)
    except ValueError as e:  # unknown game, bad preset or value, a protocol the id contradicts
        raise UsageError(str(e).splitlines()[0]) from None
    check_ray(cfg)
    env = envs.env_spec(cfg.game, cfg.preset, cfg.sticky)
    video_every = check_logging(args, env)
    init = resume = init_record = None
    if first.resume and args.run_dir and os.path.abspath(args.run_dir) != os.path.abspath(first.resume):
        raise UsageError(f"--resume {first.resume} goes on writing there; --run-dir {args.run_dir} does not apply "
                         f"(copy the run dir first to go on elsewhere)")
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
    started_with = {"game": {"typed": cfg.game, "env_id": env["env_id"], "protocol": env["protocol"],
                             "protocol_from": protocol_from}}
    if first.recipe is not None:
        path = first.config if not os.path.isabs(first.config) else home_relative(first.config)
        started_with["recipe"] = {"path": path, "settings": first.recipe}
    return {"module": module, "cfg": cfg, "env": env, "run_dir": run_dir, "init": init, "resume": resume,
            "init_record": init_record, "quiet": args.quiet, "tensorboard": args.tensorboard,
            "video_every": video_every, "started_with": started_with}


def check_logging(args, env):
    """--tensorboard needs tensorboardX; --capture-video records Atari games; -> episodes between videos (0: none)."""
    if args.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise UsageError('--tensorboard needs tensorboardX: pip install -e ".[tensorboard]"')
    if args.video_every is not None and not args.capture_video:
        raise UsageError("--video-every N goes with --capture-video")
    if not args.capture_video:
        return 0
    if not envs.atari.is_atari(env["env_id"]):
        raise UsageError(f"--capture-video records Atari games (through their recordings), not {env['env_id']}")
    every = VIDEO_EVERY if args.video_every is None else args.video_every
    if every < 1:
        raise UsageError(f"--video-every must be >= 1, got {every}")
    return every


def plan(cfg):
    """When the run stops, in words."""
    limits = [f"{cfg.total_steps:,} steps" if cfg.total_steps else "", f"{cfg.hours:g} h" if cfg.hours else ""]
    limits = [x for x in limits if x]
    return "until stopped (Ctrl-C saves)" if not limits else "until " + " or ".join(limits) + \
        (", whichever comes first" if len(limits) == 2 else "")


def discard_unstarted(run_dir, existed):
    """A run that failed before its first checkpoint leaves no run dir behind, if it made it."""
    if existed or os.path.exists(os.path.join(run_dir, "checkpoint.npz")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def beaten_before(run_dir, step):
    """Whether a run resumed at `step` had already beaten the built-in AI by then (its progress.csv has a
    running mean of 100 games above 0), so that its bar does not say so a second time."""
    try:
        cols = read_progress(os.path.join(run_dir, "progress.csv"))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return any(s <= step and e >= 100 and mean > 0
               for s, e, mean in zip(cols.get("step", []), cols.get("episode", []), cols.get("running_mean", [])))


def end_reason(cfg, run):
    """Why the run ended, for its last line: a resumed run keeps its --total-steps and --hours."""
    if run.stop_requested:
        return "stopped by signal"
    if cfg.total_steps and run.step >= cfg.total_steps:
        return f"finished (--total-steps {cfg.total_steps:,} reached)"
    if cfg.hours and run.wall_seconds() >= cfg.hours * 3600 - 1:
        return (f"finished (--hours {cfg.hours:g} of training reached; to go on: --resume {run.dir} --hours 0 "
                f"or more hours)")
    return "finished"


def train(p, threads):
    """Make the run dir and train in it; the exit code."""
    cfg, run_dir, resume = p["cfg"], p["run_dir"], p["resume"]
    step, trained = (resume[1].get("step", 0), resume[1].get("wall_seconds", 0.0)) if resume else (0, 0.0)
    existed = os.path.exists(run_dir)
    try:
        run = Run(run_dir, config_dict(cfg), p["env"], cfg.checkpoint_minutes, keep_snapshots=cfg.keep_snapshots,
                  tensorboard=p["tensorboard"], video_every=p["video_every"])
        run.write_config(step, p["init_record"], blas_threads=threads.describe(), started_with=p["started_with"])
        run.between_steps = threads.poll
    except OSError as e:
        raise UsageError(f"cannot write the run dir {run_dir}: {e.strerror or e}") from None
    say(f"run dir: {run.dir}")  # before the bar, on a line of its own
    say(f"{cfg.agent} on {p['env']['env_id']} ({p['env']['preset']}, {p['env']['protocol']}), {plan(cfg)}")
    say(f"on {machine_text(machine())}, BLAS threads {threads.describe()} (recorded in config.json)")
    bar = ProgressBar(cfg.total_steps, cfg.hours, step, p["quiet"], p["env"]["env_id"], trained,
                      beaten=bool(resume) and beaten_before(run_dir, step))
    run.message = bar.write
    try:
        with run:
            p["module"].train(cfg, run, callback=bar, init=p["init"], resume=resume)
    except KeyboardInterrupt:
        bar.close()
        say(f"interrupted twice: stopped without saving; last checkpoint: {run.checkpoint_path}")
        return 130
    except NumericalError as e:
        bar.close()
        fail(str(e), code=1)
    except distributed.WorkerError as e:  # no cluster at --ray-address, actors that cannot start
        bar.close()
        discard_unstarted(run.dir, existed)
        fail(str(e))
    except MemoryError:
        bar.close()
        discard_unstarted(run.dir, existed)
        hint = f": its replay buffer holds {cfg.buffer_size:,} frames (--buffer-size)" if hasattr(cfg, "buffer_size") \
            else ""
        fail(f"not enough memory for this run{hint}")
    except BaseException:
        bar.close()
        discard_unstarted(run.dir, existed)
        raise
    bar.close()
    say(f"{end_reason(cfg, run)}: step {run.step}, episode {run.episode}; saved {run.checkpoint_path}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        first = first_flags(argv)
        if {"-h", "--help"} & set(argv) and not (first.resume or first.config or "--agent" in " ".join(argv)):
            print(overview_help())
            return 0
        with blas_threads(first.blas_threads, default=1 if first.agent == "pg" else "auto") as threads:
            prepared = prepare(argv, first)
            if prepared is None:
                list_games()
                sys.stdout.flush()
                return 0
            return train(prepared, threads)
    except BrokenPipeError:  # --list-games | head: the reader left
        silence_terminal()
        return 0
    except UsageError as e:
        fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
