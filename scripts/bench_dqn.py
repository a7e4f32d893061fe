"""python -m scripts.bench dqn: DQN training speed on Pong with learning on, and where the time goes.

It runs agents.dqn.train for real in a temporary run dir: --warmup agent steps fill the replay
buffer (no updates), then --steps more learn as the default config does (one batch-32 Double DQN
update every 4 steps, Nature network). Rows: env steps/s during the warm-up and while learning,
then for the learning phase the seconds per part of the loop (acting, env, replay add, replay
sampling, update, other) as ms per agent step and share of the time. The machine is shared: trust
the split within one run, not the absolute figures.
"""
import json
import os
import tempfile
import warnings

import envs
from agents import dqn
from agents.run import Run, Stopwatch, config_dict
from scripts.common import (UsageError, add_blas_threads_flag, add_kernel_flag, blas_threads, fail, finite_float,
                            seed_value)

PARTS = ("act", "env", "replay_add", "replay_sample", "update", "eval", "other")


def add_arguments(parser):
    parser.add_argument("--game", default="pong", help="Atari game (default pong)")
    parser.add_argument("--warmup", type=int, default=2000, help="agent steps before learning starts")
    parser.add_argument("--steps", type=int, default=1000, help="agent steps timed with learning on")
    parser.add_argument("--num-envs", type=int, default=1, help="envs stepped together (default 1)")
    parser.add_argument("--dueling", action="store_true", help="time the dueling head")
    parser.add_argument("--prioritized", action="store_true", help="time prioritized replay (its sum tree)")
    parser.add_argument("--quantiles", type=int, default=0, help="time QR-DQN with this many quantiles (default 0: off)")
    parser.add_argument("--target-epsilon", type=finite_float, default=0.0,
                        help="time Expected SARSA targets for this epsilon (with --quantiles: the mixture's atoms)")
    parser.add_argument("--seed", type=seed_value, default=0, help="seed for the network, the envs and sampling")
    add_blas_threads_flag(parser, "auto, as scripts.train runs dqn; --vs-torch sets its own, --threads")
    vs = parser.add_argument_group("--vs-torch: the act + sample + update loop of a recipe in numpy and PyTorch")
    vs.add_argument("--vs-torch", action="store_true", help="time the loop against the same loop in PyTorch")
    vs.add_argument("--recipe", choices=("cleanrl", "shipped", "both"), default="both",
                    help="cleanrl: Double DQN, 1-step; shipped: the Pong agent's dueling 3-step (default both)")
    vs.add_argument("--updates", type=int, default=300, help="updates timed per thread count (default 300)")
    vs.add_argument("--chunk", type=int, default=25, help="updates per alternating chunk (default 25)")
    vs.add_argument("--epsilon", type=finite_float, default=0.01,
                    help="exploration while learning (default 0.01, where a run spends most of its steps)")
    vs.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="BLAS and torch threads (default 1 2)")
    add_kernel_flag(vs)


def make_config(game="pong", warmup=2000, steps=1000, num_envs=1, dueling=False, seed=0, prioritized=False,
                quantiles=0, target_epsilon=0.0):
    """The timed run's dqn Config; ValueError naming a bad value."""
    if warmup < 1 or steps < 1:
        raise ValueError(f"--warmup and --steps must be >= 1, got {warmup} and {steps}")
    return dqn.resolved(dqn.Config(game=game, seed=seed, num_envs=num_envs, dueling=dueling, prioritized=prioritized,
                                   quantiles=quantiles, target_epsilon=target_epsilon,
                                   total_steps=warmup + steps, learning_starts=warmup,
                                   buffer_size=max(4 * (warmup + steps), 10_000), eval_every=0,
                                   log_every=warmup, checkpoint_minutes=1e6))


def run(cfg, between_steps=None):
    """Train a make_config() Config for its warm-up and timed steps; return the rows. between_steps:
    the thread policy's poll, as scripts.train gives it."""
    clock = Stopwatch()
    marks = {}

    def on_event(m):
        if m["event"] == "update" and "start" not in marks:  # at step `warmup`: no update yet
            marks["start"] = (m["step"], dict(clock.totals))

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the final checkpoint's learning curve has no episodes to plot
        spec = envs.env_spec(cfg.game, cfg.preset, cfg.sticky)
        the_run = Run(os.path.join(folder, "run"), config_dict(cfg), spec, cfg.checkpoint_minutes,
                      message=lambda text: None)
        the_run.write_config()
        the_run.between_steps = between_steps
        learner = dqn.train(cfg, the_run, callback=on_event, stopwatch=clock)
    # the loop's own time only: setup (envs, networks) and the final checkpoint are left out
    step0, before = marks["start"]
    warm_seconds = sum(before.values()) - before.get("setup", 0.0)
    learn_steps = the_run.step - step0
    learn_seconds = sum(clock.totals.values()) - sum(before.values())
    rows = [{"name": "steps/s warm-up (no learning)", "value": round(step0 / warm_seconds, 1)},
            {"name": "steps/s learning", "value": round(learn_steps / learn_seconds, 1)},
            {"name": "updates", "value": learner.updates}]
    for part in PARTS:
        seconds = clock.totals.get(part, 0.0) - before.get(part, 0.0)
        rows.append({"name": part, "ms_per_step": round(1e3 * seconds / learn_steps, 3),
                     "share": round(seconds / learn_seconds, 3)})
    if learner.updates:
        for part in ("replay_sample", "update"):
            seconds = clock.totals.get(part, 0.0) - before.get(part, 0.0)
            rows.append({"name": f"{part} per call", "ms": round(1e3 * seconds / learner.updates, 3)})
    return rows


def main(args):
    if args.vs_torch:
        if args.updates < 1 or args.chunk < 1 or min(args.threads) < 1 or not 0 <= args.epsilon <= 1:
            fail("--updates, --chunk and --threads must be >= 1 and --epsilon in [0, 1]")
        try:
            atari = envs.atari.is_atari(envs.resolve(args.game))
        except ValueError as e:
            fail(str(e).splitlines()[0])
        if not atari:
            fail(f"--vs-torch times the Nature network on an Atari game, not {args.game}")
        from scripts import bench_dqn_torch  # torch is imported there, and only there
        return bench_dqn_torch.main(args)
    try:
        cfg = make_config(args.game, args.warmup, args.steps, args.num_envs, args.dueling, args.seed,
                          args.prioritized, args.quantiles, args.target_epsilon)
    except ValueError as e:  # a bad flag value or an unknown game: one line, exit 2
        fail(str(e).splitlines()[0])
    try:
        with blas_threads(args.blas_threads) as threads:  # as scripts.train runs dqn
            print(f"DQN on {args.game}: {args.warmup} warm-up steps, then {args.steps} with learning on "
                  f"(BLAS threads {threads.describe()}; shared machine: trust the split)")
            rows = run(cfg, threads.poll)
            threads_used = threads.describe()
    except UsageError as e:
        fail(str(e))
    for row in rows:
        if "value" in row:
            print(f"  {row['name']:<32} {row['value']:>10,}")
        elif "share" in row:
            print(f"  {row['name']:<32} {row['ms_per_step']:>8.3f} ms/step  {100 * row['share']:5.1f} %")
        else:
            print(f"  {row['name']:<32} {row['ms']:>8.3f} ms")
    print(json.dumps({"bench": "dqn", "blas_threads": threads_used, "prioritized": bool(args.prioritized),
                      "quantiles": args.quantiles, "target_epsilon": args.target_epsilon, "rows": rows}))
    return 0
