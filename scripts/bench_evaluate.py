"""python -m scripts.bench evaluate [CHECKPOINT]: what scripts.evaluate costs per step, against its parts.

For each of --games games, in turn: (1) the game as scripts.evaluate plays it (agents.evaluation,
the checkpoint's own env and protocol, at the command's default thread policy, polled every step,
or --blas-threads);
(2) the env alone for as many steps, with random actions; (3) the agent's act() (one batch-1
forward and the epsilon draw), timed twice: in a loop of its own, and between env steps as a game
calls it (the emulator then has pushed the network's weights out of the caches: the dueling head's
13 MB are read from memory). Ratios: (1) over (2) + (3), per step, for both ways of timing (3).
Done on the machine as it is and again with a CPU-burning process beside it (--no-burner: only
the first).
"""
import json
import os
import time

import numpy as np

import agents
from agents.evaluation import make_eval_env, play_game, play_rule
from scripts.bench_threads import start_burner, stop_burner
from scripts.common import UsageError, add_blas_threads_flag, blas_threads, fail, seed_value

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints", "pong-dqn.npz")


def add_arguments(parser):
    parser.add_argument("checkpoint", nargs="?", default=SHIPPED, help="an agent checkpoint (default: the shipped "
                                                                        "Pong DQN)")
    parser.add_argument("--games", type=int, default=3, help="games per condition (default 3)")
    parser.add_argument("--seed", type=seed_value, default=0, help="seed of the first game")
    parser.add_argument("--no-sticky", action="store_true", help="NoFrameskip-v4 protocol instead of ALE v5's")
    parser.add_argument("--no-burner", action="store_true", help="only the machine as it is")
    add_blas_threads_flag(parser, "auto, as scripts.evaluate")


def env_only(agent, sticky, steps, seed):
    """Seconds for `steps` env steps with random actions, and some observations for act()."""
    env = make_eval_env(agent, sticky)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    kept = [obs]
    start = time.perf_counter()
    for t in range(steps):
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(agent.n_actions)))
        if terminated or truncated:
            obs, _ = env.reset()
        if t % 10 == 0 and len(kept) < 200:
            kept.append(obs)
    seconds = time.perf_counter() - start
    env.close()
    return seconds, kept


def act_seconds(agent, observations, calls, explore):
    """Median seconds of one act() on a batch-1 observation, calls in a row."""
    times = []
    for k in range(calls):
        obs = observations[k % len(observations)][None]
        start = time.perf_counter()
        agent.act(obs, explore=explore)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def act_between_steps(agent, sticky, calls, seed, explore):
    """Median seconds of one act() called between env steps (random actions), as a game calls it."""
    env = make_eval_env(agent, sticky)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        agent.act(obs[None], explore=explore)
        times.append(time.perf_counter() - start)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(agent.n_actions)))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return float(np.median(times))


def measure(agent, args, sticky, explore, policy):
    rows = []
    for k in range(args.games):
        env = make_eval_env(agent, sticky)
        start = time.perf_counter()
        _, steps = play_game(agent, env, args.seed + k, explore, on_step=lambda *_: policy.poll())
        game = time.perf_counter() - start
        env.close()
        policy.poll()
        env_seconds, observations = env_only(agent, sticky, steps, args.seed + k)
        calls = min(steps, 2000)
        act = act_seconds(agent, observations, calls, explore)
        act_in_game = act_between_steps(agent, sticky, calls, args.seed + k, explore)
        rows.append({"steps": steps, "game_ms_per_step": 1e3 * game / steps,
                     "env_ms_per_step": 1e3 * env_seconds / steps, "act_ms": 1e3 * act,
                     "act_between_steps_ms": 1e3 * act_in_game, "ratio": game / (env_seconds + steps * act),
                     "ratio_act_between_steps": game / (env_seconds + steps * act_in_game)})
    med = {key: round(float(np.median([r[key] for r in rows])), 3) for key in rows[0] if key != "steps"}
    return {"games": len(rows), "steps": int(sum(r["steps"] for r in rows)), **med, "threads": policy.describe()}


def main(args):
    if args.games < 1:
        fail(f"--games must be >= 1, got {args.games}")
    try:
        agent = agents.load(args.checkpoint, seed=args.seed)
    except agents.CheckpointError as e:
        fail(str(e))
    explore = play_rule(agent)
    sticky = not args.no_sticky
    print(f"evaluate {args.checkpoint}: {args.games} games per condition, {'sticky' if sticky else 'no sticky'}; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    results = []
    try:
        with blas_threads(args.blas_threads) as policy:
            results.append({"condition": "as it is", **measure(agent, args, sticky, explore, policy)})
            if not args.no_burner:
                burner = start_burner()
                try:
                    time.sleep(1.0)
                    results.append({"condition": "with a burner", **measure(agent, args, sticky, explore, policy)})
                finally:
                    stop_burner(burner)
    except UsageError as e:
        fail(str(e))
    for r in results:
        print(f"  {r['condition']}: {r['steps']} steps, BLAS threads {r['threads']}; ms per step: game "
              f"{r['game_ms_per_step']:.3f}, env alone {r['env_ms_per_step']:.3f}, act alone {r['act_ms']:.3f}, act "
              f"between env steps {r['act_between_steps_ms']:.3f}")
        print(f"    game / (env + act alone) {r['ratio']:.2f}, game / (env + act between steps) "
              f"{r['ratio_act_between_steps']:.2f} (target <= 1.2)")
        print(json.dumps({"bench": "evaluate", "checkpoint": os.path.basename(args.checkpoint), **r}))
    return 0
