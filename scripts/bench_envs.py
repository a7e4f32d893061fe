"""python -m scripts.bench envs: agent steps per second of every way the agents see Atari.

Rows, all on Pong with random actions and the default protocol (v5, sticky actions): the raw
`ALE/Pong-v5` env (rgb, frameskip 4); each preset in one env (karpathy, deepmind, deepmind with the
training wrappers, classic on CartPole-v1); make_vector with 1, 2, 4 and 8 envs for karpathy and
deepmind (a vector step of N envs counts N agent steps). Each row runs for --seconds after a short
warm-up; an episode that ends is reset and the reset time counts. The machine is shared: trust the
ratios within one run, not the absolute figures.
"""
import json
import time

import gymnasium as gym
import numpy as np

import envs
from scripts.common import positive_float, seed_value

VECTOR_SIZES = (1, 2, 4, 8)


def add_arguments(parser):
    parser.add_argument("--seconds", type=positive_float, default=2.0, help="timed seconds per row")
    parser.add_argument("--seed", type=seed_value, default=0, help="seed for the envs and the random actions")


def time_single(env, seconds, rng):
    """Agent steps/s of one env under random actions, resetting whenever an episode ends."""
    env.reset(seed=int(rng.integers(2**31)))
    n = env.action_space.n
    actions = rng.integers(n, size=4096)
    for t in range(50):  # warm-up, untimed
        _, _, terminated, truncated, _ = env.step(int(actions[t]))
        if terminated or truncated:
            env.reset()
    steps, start = 0, time.perf_counter()
    while True:
        _, _, terminated, truncated, _ = env.step(int(actions[steps % 4096]))
        if terminated or truncated:
            env.reset()
        steps += 1
        if steps % 64 == 0 and time.perf_counter() - start >= seconds:
            return steps / (time.perf_counter() - start)


def time_vector(venv, seconds, rng):
    """Total agent steps/s of a vector env (autoreset inside) under random actions."""
    venv.reset(seed=int(rng.integers(2**31)))
    n, num_envs = venv.single_action_space.n, venv.num_envs
    actions = rng.integers(n, size=(1024, num_envs))  # (T, N)
    for t in range(10):  # warm-up, untimed (the C++ threads start on the first steps)
        venv.step(actions[t])
    steps, start = 0, time.perf_counter()
    while True:
        venv.step(actions[steps % 1024])
        steps += 1
        if steps % 16 == 0 and time.perf_counter() - start >= seconds:
            return steps * num_envs / (time.perf_counter() - start)


def cases():
    """(row name, kind, zero-argument factory), in the order they are printed."""
    yield "raw ALE/Pong-v5", "single", lambda: gym.make("ALE/Pong-v5")
    yield "karpathy pong", "single", lambda: envs.make("pong", "karpathy")
    yield "deepmind pong", "single", lambda: envs.make("pong", "deepmind")
    yield "deepmind pong training", "single", lambda: envs.make("pong", "deepmind", training=True)
    yield "classic CartPole-v1", "single", lambda: envs.make("CartPole-v1", "classic")
    for preset in ("karpathy", "deepmind"):
        for n in VECTOR_SIZES:
            yield f"make_vector {preset} pong x{n}", "vector", lambda p=preset, n=n: envs.make_vector("pong", p, n)


def run(seconds=2.0, seed=0, report=None):
    """Time every case; return rows [{"name", "steps_per_s"}]; report(row) is called as each ends."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, kind, factory in cases():
        env = factory()
        try:
            rate = (time_single if kind == "single" else time_vector)(env, seconds, rng)
        finally:
            env.close()
        rows.append({"name": name, "steps_per_s": round(rate, 1)})
        if report:
            report(rows[-1])
    return rows


def main(args):
    print(f"agent steps/s, random actions, {args.seconds:g} s per row (shared machine: trust ratios)")
    rows = run(args.seconds, args.seed,
               report=lambda row: print(f"  {row['name']:<34} {row['steps_per_s']:>10,.0f}", flush=True))
    print(json.dumps({"bench": "envs", "rows": rows}))
    return 0
