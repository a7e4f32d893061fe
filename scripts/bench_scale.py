"""python -m scripts.bench scale: an agent's rollouts on 1, 2 and 4 Ray actors next to one process.

Rows: agent steps/s of experience delivered to the learner by the same rollout code run in this
process, then by a local Ray with 1, 2 and 4 actors (--num-envs envs each, actions sampled from a
fixed policy, no updates); and per actor count, the time of one weight broadcast (ray.put of the
network's state_dict and every actor's set_weights done). The actors play in synchronous rounds,
as scripts.train runs them: every actor plays its share, and the next round starts once all have
answered. --agent pg: Karpathy's Pong preset, ~100 vector steps a call (its policy is 5 MB);
--agent ppo: the main job's settings, a round of --num-steps steps a call (Nature's torso: 6.7 MB).
Ray's start and the actors' own start are not timed. On a 2-core machine the point is that the
figures are right and the overhead small, not a speed-up: actors beyond the cores only share
them, and anything else running on the machine counts. On a cluster, pass --ray-address.
"""
import dataclasses
import importlib.util
import json
import time

import numpy as np

from agents import policy_gradient as pg
from agents import ppo
from agents.distributed import Fleet, start_ray
from scripts.common import UsageError, add_blas_threads_flag, at_least_one, blas_threads, fail, seed_value


def add_arguments(parser):
    parser.add_argument("--agent", choices=("pg", "ppo"), default="pg", help="whose rollout code (default pg)")
    parser.add_argument("--game", default="pong")
    parser.add_argument("--num-envs", type=int, default=8, help="envs per actor")
    parser.add_argument("--steps", type=at_least_one, default=20_000, help="agent steps timed per row")
    parser.add_argument("--workers", default="1,2,4", help="actor counts, comma-separated")
    parser.add_argument("--broadcasts", type=at_least_one, default=10, help="weight broadcasts timed per row")
    parser.add_argument("--ray-address", default="", help="join this Ray cluster (default: a local Ray)")
    parser.add_argument("--seed", type=seed_value, default=0)
    add_blas_threads_flag(parser, "1, as every actor has")


@dataclasses.dataclass
class Rollouts:
    """One agent's rollout code as the bench calls it: its Ray actor class, the config, the method
    that plays a call's worth of steps and its arguments."""
    cfg: object
    worker: type
    method: str
    args: tuple


def rollouts(agent, game, num_envs, seed):
    """Rollouts of `agent` ('pg' or 'ppo'); ValueError for a game or setting it cannot play."""
    if agent == "ppo":
        return Rollouts(ppo.resolved(ppo.Config(game=game, num_envs=num_envs, seed=seed)), ppo.PPOWorker, "play", ())
    return Rollouts(pg.resolved(pg.Config(game=game, num_envs=num_envs, seed=seed)), pg.PGWorker, "collect",
                    (4 * num_envs * 25,))  # about 100 vector steps per call


def in_process_speed(r, steps):
    """(steps/s of the actor's code called in this process, the weights the broadcasts send)."""
    worker = r.worker(dataclasses.asdict(r.cfg), 0, r.cfg.seed)
    play = getattr(worker, r.method)
    play(*r.args)  # warm: first forward passes, the envs' first frames
    done, start = 0, time.perf_counter()
    while done < steps:
        done += play(*r.args)["steps"]
    elapsed = time.perf_counter() - start
    worker.close()
    return done / elapsed, worker.model.state_dict()


def fleet_speed(ray, r, state, workers, steps, broadcasts):
    """(steps/s delivered by `workers` actors in synchronous rounds, median ms per broadcast)."""
    config = dataclasses.asdict(r.cfg)
    fleet = Fleet(ray, r.worker, lambda i, g: (config, i, r.cfg.seed + 1000 * i + g), workers)

    def round_of_steps():
        for i in range(workers):
            fleet.call(i, r.method, *r.args)
        done = 0
        while fleet.pending:
            got = fleet.next(timeout=60)
            if got is not None and got[1] is not None:
                done += got[1]["steps"]
        return done

    try:
        ray.get(fleet.broadcast(state))
        round_of_steps()  # warm, as in process
        times = []
        for _ in range(broadcasts):
            start = time.perf_counter()
            ray.get(fleet.broadcast(state))
            times.append(time.perf_counter() - start)
        done, start = 0, time.perf_counter()
        while done < steps:
            done += round_of_steps()
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
    try:
        r = rollouts(args.agent, args.game, args.num_envs, args.seed)
    except ValueError as e:  # a bad flag value or an unknown game: one line, exit 2
        fail(str(e))
    try:
        # 1 thread, as each actor has (agents/distributed.py)
        with blas_threads(args.blas_threads, default=1):
            speed, state = in_process_speed(r, args.steps)
    except UsageError as e:
        fail(str(e))
    rows = [{"name": f"in process ({args.num_envs} envs)", "workers": 0, "steps_per_s": round(speed, 1)}]
    ray, started = start_ray(args.ray_address, max(counts))
    try:
        for n in counts:
            speed, broadcast_ms = fleet_speed(ray, r, state, n, args.steps, args.broadcasts)
            rows.append({"name": f"{n} actor{'s' * (n > 1)} ({args.num_envs} envs each)", "workers": n,
                         "steps_per_s": round(speed, 1), "broadcast_ms": round(broadcast_ms, 2)})
    finally:
        if started:
            ray.shutdown()
    for row in rows:
        extra = f"   broadcast {row['broadcast_ms']:8.2f} ms" if "broadcast_ms" in row else ""
        print(f"{row['name']:36s} {row['steps_per_s']:10.1f} steps/s{extra}")
    print(json.dumps({"bench": "scale", "agent": args.agent, "game": r.cfg.game, "preset": r.cfg.preset, "rows": rows}))
    return 0
