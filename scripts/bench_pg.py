"""python -m scripts.bench pg: policy-gradient training speed next to the raw speed of its envs.

In one run and on the same envs (Karpathy's preset, make_vector with --num-envs): agent steps/s of
the envs alone under random actions, then of the whole training loop (batched forward, sampling,
rollout bookkeeping and the updates), timed over whole rollout-and-update cycles. The ratio is the
share of env speed that training keeps (target >= 0.90). The machine is shared: trust the ratio,
not the absolute figures.
"""
import json
import os
import tempfile
import time

import numpy as np

import envs
from agents import policy_gradient as pg
from agents.run import Run, config_dict
from scripts.common import UsageError, add_blas_threads_flag, blas_threads, fail, seed_value


def add_arguments(parser):
    parser.add_argument("--game", default="pong")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40_000, help="agent steps timed per row")
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--batch-steps", type=int, default=None, help="steps per update (default: the agent's)")
    add_blas_threads_flag(parser, "1, as scripts.train runs pg")


def raw_env_speed(cfg, steps):
    venv = envs.make_vector(cfg.game, cfg.preset, cfg.num_envs, seed=cfg.seed, sticky=cfg.sticky)
    rng = np.random.default_rng(cfg.seed)
    n = cfg.num_envs
    for _ in range(20):
        venv.step(rng.integers(venv.single_action_space.n, size=n))
    start = time.perf_counter()
    for _ in range(steps // n):
        venv.step(rng.integers(venv.single_action_space.n, size=n))
    elapsed = time.perf_counter() - start
    venv.close()
    return (steps // n) * n / elapsed


def training_speed(cfg, steps):
    with tempfile.TemporaryDirectory() as tmp:
        warm = pg.dataclasses.replace(cfg, total_steps=cfg.batch_steps // 2)
        run = Run(os.path.join(tmp, "warm"), config_dict(warm), {}, checkpoint_minutes=1e9,
                  message=lambda text: None)
        pg.train(warm, run)  # imports, first forward passes
        # timed from the first update to the last: whole cycles of rollouts and an update, without
        # building the envs or writing the final checkpoint and curve (the env row excludes them too)
        timed = pg.dataclasses.replace(cfg, total_steps=steps + cfg.batch_steps)
        run = Run(os.path.join(tmp, "timed"), config_dict(timed), {}, checkpoint_minutes=1e9,
                  message=lambda text: None)
        updates = []  # (seconds, step) after each update

        def on_event(event):
            if event["event"] == "update":
                updates.append((time.perf_counter(), event["step"]))

        pg.train(timed, run, callback=on_event)
        if len(updates) < 2:
            return None
        (t0, s0), (t1, s1) = updates[0], updates[-1]
        return (s1 - s0) / (t1 - t0)


def main(args):
    extra = {} if args.batch_steps is None else {"batch_steps": args.batch_steps}
    try:
        cfg = pg.resolved(pg.Config(game=args.game, num_envs=args.num_envs, seed=args.seed, **extra))
    except ValueError as e:  # a bad flag value or an unknown game: one line, exit 2
        fail(str(e).splitlines()[0])
    if args.steps < cfg.batch_steps:
        fail(f"--steps {args.steps} is less than one update's batch ({cfg.batch_steps} steps)")
    try:
        with blas_threads(args.blas_threads, default=1):  # as scripts.train runs pg
            raw = raw_env_speed(cfg, args.steps)
            train = training_speed(cfg, args.steps)
    except UsageError as e:
        fail(str(e))
    if train is None:
        fail(f"--steps {args.steps} gave fewer than two updates to time between: use more")
    rows = [{"name": f"env only ({cfg.num_envs} envs, random actions)", "steps_per_s": round(raw, 1)},
            {"name": f"pg training ({cfg.num_envs} envs)", "steps_per_s": round(train, 1)}]
    for r in rows:
        print(f"{r['name']:44s} {r['steps_per_s']:10.1f} steps/s")
    print(f"{'training / env':44s} {train / raw:10.3f}   (target >= 0.90)")
    print(json.dumps({"bench": "pg", "rows": rows, "ratio": round(train / raw, 4)}))
    return 0
