"""Ray, for the runs and evaluations whose envs live on actors while the learner stays one numpy process.

An algorithm passes its actor class (agents/dqn.py's DQNWorker, agents/policy_gradient.py's
PGWorker; here, EvalWorker) to a Fleet, which starts n of them (ray.remote wraps the plain class at
run time), keeps one call in flight per actor and broadcasts weights: a state_dict of numpy arrays
put into Ray's object store once per version. No code travels beyond the class reference, so every
machine runs its own installed grok-arcade. Only this module imports Ray, and only when asked to.

Faults: an actor that dies, fails in a call or loses its node (any RayError) is replaced by a new one
with fresh envs; what it had not returned is lost and never counted, so progress.csv and the
checkpoint (written by the learner alone) stay consistent.

Evaluation: game k goes to whichever actor is free and draws the agent's randomness from a stream
seeded by its own env seed, so its return does not depend on the actor. agents.evaluation.evaluate
draws every game from one stream, so the two agree game for game only for deterministic play.
"""
import logging
import os
import signal
import socket
import tempfile
import threading
import time

import numpy as np

from agents.evaluation import make_eval_env, play_game, play_rule, summarize

# one CPU per actor, so one BLAS thread: spare OpenBLAS threads spinning against the emulators' made
# small GEMMs 20x slower (scripts.common.blas_threads). A local Ray's workers get it from start_ray; on a
# cluster, Ray sets OMP_NUM_THREADS=1 for one-CPU actors, which OpenBLAS follows when unset itself.
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
INSTALL_HINT = 'pip install -e ".[distributed]"'


class WorkerError(RuntimeError):
    """No Ray cluster at the address given, or actors that keep dying before they return anything."""


def start_ray(address="", num_cpus=1):
    """Import Ray and connect: to the cluster at address, or to a new local Ray with num_cpus.
    Returns (ray, started): started says that this call started Ray, so its caller shuts it down.
    Ray replaces the SIGTERM handler when it starts; the run's own handlers are put back."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"workers need Ray: {INSTALL_HINT}") from None
    if ray.is_initialized():
        return ray, False
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, **options)
        else:
            saved = {k: os.environ.get(k) for k in ONE_THREAD}
            os.environ.update(ONE_THREAD)  # the local Ray's worker processes inherit this environment
            try:
                ray.init(num_cpus=max(int(num_cpus), os.cpu_count() or 1), **options)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    except ConnectionError as e:
        raise WorkerError(f"cannot join a Ray cluster at {address}: {short(e)}") from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return ray, True


def check_reachable(address, timeout=5.0):
    """HOST:PORT must answer at once: Ray itself retries an unreachable address for minutes."""
    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port} ({e.strerror or e}); "
                              f"start the head there with: ray start --head") from None


def worker_seed(*parts):
    """One 31-bit seed from (run seed, step, worker, generation): replacements play new games."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % (2**31))


def short(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


# ----------------------------------------------------------------------------- actors

class EvalWorker:
    """Plays whole games with a checkpoint sent as bytes (every machine reads the same file), rebuilt
    with `load` (agents.load, passed in so that this module imports no algorithm)."""

    def __init__(self, checkpoint_bytes, sticky, greedy, epsilon, load):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "checkpoint.npz")
            with open(path, "wb") as f:
                f.write(checkpoint_bytes)
            self.agent = load(path)
        self.sticky, self.explore = sticky, play_rule(self.agent, greedy, epsilon)

    def play(self, k, seed):
        self.agent.rng = np.random.default_rng(seed)  # the game's own stream: same on any actor
        env = make_eval_env(self.agent, self.sticky)
        try:
            ret, length = play_game(self.agent, env, seed, self.explore)
        finally:
            env.close()
        return k, ret, length


class Fleet:
    """n actors of one class with at most one call in flight each; weights broadcast as one Ray
    object per version; a dead actor is replaced (generation + 1) and its lost call dropped."""

    def __init__(self, ray, cls, args_for, n, on_lost=None):
        self.ray, self.args_for, self.on_lost = ray, args_for, on_lost
        self.remote_cls = ray.remote(cls)
        self.tag = f"grok-arcade-{os.getpid()}-{time.time_ns()}"  # unique among a cluster's actor names
        self.generation = [0] * n
        self.pending = {}  # ObjectRef -> actor index
        self.version, self.weights = -1, None
        self.lost_in_a_row = 0
        self.actors = [self._start(i) for i in range(n)]

    def _start(self, i):
        return self.remote_cls.options(
            name=f"{self.tag}-{i}-{self.generation[i]}", num_cpus=1, max_restarts=0,
            scheduling_strategy="SPREAD").remote(*self.args_for(i, self.generation[i]))

    def broadcast(self, state):
        """Send a state_dict to every actor: one ray.put, then one small call per actor."""
        self.version += 1
        self.weights = self.ray.put(dict(state))  # copied into the object store now: later updates don't leak in
        return [a.set_weights.remote(self.version, self.weights) for a in self.actors]

    def call(self, i, method, *args):
        self.pending[getattr(self.actors[i], method).remote(*args)] = i

    def next(self, timeout):
        """(index, result) of the first call to finish; (index, None) when its actor was lost and
        replaced; None when nothing finished within timeout seconds."""
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        if not ready:
            return None
        i = self.pending.pop(ready[0])
        try:
            result = self.ray.get(ready[0])
        except self.ray.exceptions.RayError as e:  # the actor died, its call failed, its node went away
            self.replace(i, e)
            return i, None
        self.lost_in_a_row = 0
        return i, result

    def replace(self, i, error):
        self.lost_in_a_row += 1
        if self.lost_in_a_row > 2 * len(self.actors) + 2:
            raise WorkerError(f"{self.lost_in_a_row} actors in a row lost before returning anything "
                              f"(is grok-arcade installed on every node?); last: {short(error)}")
        self._kill(self.actors[i])
        self.pending = {ref: j for ref, j in self.pending.items() if j != i}
        self.generation[i] += 1
        self.actors[i] = self._start(i)
        if self.weights is not None:
            self.actors[i].set_weights.remote(self.version, self.weights)
        if self.on_lost:
            self.on_lost(i, error)

    def _kill(self, actor):
        try:
            self.ray.kill(actor)
        except Exception:  # already gone, or Ray itself going down: nothing left to stop
            pass

    def shutdown(self):
        for actor in self.actors:
            self._kill(actor)
        self.pending = {}


# ----------------------------------------------------------------------------- what training runs share

def lost_reporter(run, callback):
    def on_lost(i, error):
        run.message(f"worker {i} lost ({short(error)}): replaced; its unreturned steps are not counted")
        if callback:
            callback({"event": "worker_lost", "step": run.step, "worker": i, "error": short(error)})
    return on_lost


def report_rollout(run, callback, result, generation):
    """Count an actor's result: its steps and finished episodes (Run.count), then a "rollout" event."""
    run.count(result["steps"], result["episodes"], callback)
    if callback:
        callback({"event": "rollout", "step": run.step, "worker": result["worker"], "generation": generation,
                  "version": result["version"], "steps": result["steps"]})


def shut_down(ray, fleet, started):
    if fleet is not None:
        fleet.shutdown()
    if started:
        ray.shutdown()


# ----------------------------------------------------------------------------- evaluation

def evaluate(path, load, episodes, seed=0, sticky=True, greedy=False, workers=2, ray_address="", on_game=None,
             epsilon=None):
    """agents.evaluation.evaluate's games and summary, played on `workers` actors that each rebuild the
    checkpoint from its bytes with load (agents.load; see the module's note on randomness); greedy and
    epsilon as in agents.evaluation.play_rule. on_game(k, return, length) is called in game order."""
    with open(path, "rb") as f:
        blob = f.read()
    ray, started = start_ray(ray_address, workers)
    fleet = None
    try:
        blob_ref = ray.put(blob)
        fleet = Fleet(ray, EvalWorker, lambda i, g: (blob_ref, sticky, greedy, epsilon, load), min(workers, episodes))
        todo = list(range(episodes))[::-1]
        running = {}  # actor index -> game index
        for i in range(len(fleet.actors)):
            k = todo.pop()
            running[i] = k
            fleet.call(i, "play", k, seed + k)
        done, reported = {}, 0
        while len(done) < episodes:
            got = fleet.next(timeout=5.0)
            if got is None:
                continue
            i, result = got
            if result is None:  # the actor was replaced: play its game again
                todo.append(running[i])
            else:
                k, ret, length = result
                done[k] = (ret, length)
            if todo:
                running[i] = todo.pop()
                fleet.call(i, "play", running[i], seed + running[i])
            while reported in done:
                if on_game:
                    on_game(reported, *done[reported])
                reported += 1
    finally:
        shut_down(ray, fleet, started)
    return summarize([done[k][0] for k in range(episodes)], [done[k][1] for k in range(episodes)])
