"""python -m scripts.bench scale: policy-gradient rollouts on 1, 2 and 4 Ray actors next to one process.

Rows: agent steps/s of experience delivered to the learner (Karpathy's Pong preset, --num-envs
envs per actor, actions sampled from a fixed policy, no updates) by the same rollout code run in this
process, then by a local Ray with 1, 2 and 4 actors; and per actor count, the time of one weight
broadcast (ray.put of the policy's state_dict and every actor's set_weights done: Pong's policy is
5 MB). Ray's start and the actors' own start are not timed. On a 2-core machine the point is that
the figures are right and the overhead small, not a speed-up: actors beyond the cores only share
them, and anything else running on the machine counts. On a cluster, pass --ray-address.
"""
import dataclasses
import importlib.util
import json
import time

import numpy as np

from agents import policy_gradient as pg
from agents.distributed import Fleet, start_ray
from agents.policy_gradient import PGWorker
from scripts.common import UsageError, add_blas_threads_flag, blas_threads, fail, seed_value


def add_arguments(parser):
    parser.add_argument("--game", default="pong")
    parser.add_argument("--num-envs", type=int, default=8, help="envs per actor")
    parser.add_argument("--steps", type=int, default=20_000, help="agent steps timed per row")
    parser.add_argument("--workers", default="1,2,4", help="actor counts, comma-separated")
    parser.add_argument("--broadcasts", type=int, default=10, help="weight broadcasts timed per row")
    parser.add_argument("--ray-address", default="", help="join this Ray cluster (default: a local Ray)")
    parser.add_argument("--seed", type=seed_value, default=0)
    add_blas_threads_flag(parser, "1, as scripts.train runs pg")


def in_process_speed(cfg, steps, per_call):
    worker = PGWorker(dataclasses.asdict(cfg), 0, cfg.seed)
    worker.collect(per_call)  # warm: first forward passes, the envs' first frames
    done, start = 0, time.perf_counter()
    while done < steps:
        done += worker.collect(per_call)["steps"]
    elapsed = time.perf_counter() - start
    worker.venv.close()
    return done / elapsed, worker.model.state_dict()  # the weights the broadcasts send


def fleet_speed(ray, cfg, state, workers, steps, per_call, broadcasts):
    """(steps/s delivered by `workers` actors, median ms per broadcast)."""
    config = dataclasses.asdict(cfg)
    fleet = Fleet(ray, PGWorker, lambda i, g: (config, i, cfg.seed + 1000 * i + g), workers)
    try:
        ray.get(fleet.broadcast(state))
        for i in range(workers):  # warm, as in process
            fleet.call(i, "collect", per_call)
        while fleet.pending:
            fleet.next(timeout=60)
        times = []
        for _ in range(broadcasts):
            start = time.perf_counter()
            ray.get(fleet.broadcast(state))
            times.append(time.perf_counter() - start)
        for i in range(workers):
            fleet.call(i, "collect", per_call)
        done, start = 0, time.perf_counter()
        while done < steps:
            i, result = fleet.next(timeout=60) or (None, None)
            if result is not None:
                done += result["steps"]
                fleet.call(i, "collect", per_call)
        return done / (time.perf_counter() - start), 1000 * float(np.median(times))
    finally:
        fleet.shutdown()


def main(args):
    if importlib.util.find_spec("ray") is None:
        fail('bench scale runs Ray actors: pip install -e ".[distributed]"')
    try:
        counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        fail(f"--workers {args.workers}: actor counts, comma-separated (1,2,4)")
    if not counts or min(counts) < 1:
        fail(f"--workers {args.workers}: actor counts must be >= 1")
    cfg = pg.resolved(pg.Config(game=args.game, num_envs=args.num_envs, seed=args.seed))
    per_call = 4 * args.num_envs * 25  # about 100 vector steps per call
    try:
        # 1 thread, as scripts.train runs pg and as each actor has (agents/distributed.py)
        with blas_threads(args.blas_threads, default=1):
            speed, state = in_process_speed(cfg, args.steps, per_call)
    except UsageError as e:
        fail(str(e))
    rows = [{"name": f"in process ({args.num_envs} envs)", "workers": 0, "steps_per_s": round(speed, 1)}]
    ray, started = start_ray(args.ray_address, max(counts))
    try:
        for n in counts:
            speed, broadcast_ms = fleet_speed(ray, cfg, state, n, args.steps, per_call, args.broadcasts)
            rows.append({"name": f"{n} actor{'s' * (n > 1)} ({args.num_envs} envs each)", "workers": n,
                         "steps_per_s": round(speed, 1), "broadcast_ms": round(broadcast_ms, 2)})
    finally:
        if started:
            ray.shutdown()
    for r in rows:
        extra = f"   broadcast {r['broadcast_ms']:8.2f} ms" if "broadcast_ms" in r else ""
        print(f"{r['name']:36s} {r['steps_per_s']:10.1f} steps/s{extra}")
    print(json.dumps({"bench": "scale", "game": cfg.game, "preset": cfg.preset, "rows": rows}))
    return 0
