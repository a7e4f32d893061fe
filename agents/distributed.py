"""Rollouts and evaluations on Ray actors while the learner stays one numpy process.

Each actor (PGWorker here, DQNWorker in agents/apex.py, EvalWorker: plain classes that ray.remote
wraps at run time) owns its envs (envs.make_vector) and a copy of the network. Weights travel as a
state_dict of numpy arrays, put into Ray's object store once per broadcast and numbered (0 first);
code never travels beyond the class reference Ray needs to start an actor, so every machine runs
its own installed copy of grok-arcade. Actors return numpy arrays and numbers, tagged with the
weights version they acted with. Only this module imports Ray, and only when asked to.

Policy gradient, in synchronous rounds: every actor steps its num_envs envs until it holds
batch_steps / workers steps of finished pieces (a point or an episode, cut as
agents/policy_gradient.py cuts them) and returns them; once all have answered, the learner updates
on the batch and broadcasts. REINFORCE has no correction for experience from older weights, so a
round waits for its slowest actor rather than learn from stale games: letting fast actors run on
(one update stale) made CartPole runs climb to 400 and collapse. Pieces an actor holds unfinished
at the end of a round carry over to its next one.

Faults: an actor that dies (RayActorError), fails in a call or loses its node (any RayError) is
replaced by a new one with fresh envs; whatever it had not returned is lost and never counted in
run.step, so progress.csv and the checkpoint (written by the learner alone) stay consistent. A stop
request (Ctrl-C, SIGTERM) ends the loop, the run saves, and the actors are killed.

Evaluation: games seed, seed+1, ... go to whichever actor is free; each game draws the agent's
randomness from a stream seeded by its own env seed, so a game's return does not depend on which
actor played it. agents.evaluation.evaluate draws every game from one stream instead, so the two
agree game for game only when the agent plays deterministically (greedy policy gradient, DQN with
eval_epsilon 0).
"""
import dataclasses
import logging
import math
import os
import signal
import socket
import tempfile
import threading
import time

import numpy as np

import envs

PG_BROADCAST_EVERY = 1  # updates between broadcasts; 1 keeps REINFORCE on-policy (rounds act with the newest)
# one CPU per actor, so one BLAS thread: spare OpenBLAS threads spinning against the emulators' made
# small GEMMs 20x slower (scripts/train.py). A local Ray's workers get it from start_ray; on a
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

class PGWorker:
    """num_envs envs and a policy copy; collect() returns finished pieces of experience."""

    def __init__(self, cfg, index, seed):
        from agents import policy_gradient as pg
        self.pg, self.cfg, self.index = pg, pg.Config(**cfg), index
        self.rng = np.random.default_rng(seed)
        n = self.cfg.num_envs
        self.venv = envs.make_vector(self.cfg.game, self.cfg.preset, n, sticky=self.cfg.sticky)
        obs_size = int(np.prod(self.venv.single_observation_space.shape))
        n_actions = int(self.venv.single_action_space.n)
        self.model = pg.build_policy(obs_size, n_actions, self.cfg.hidden, self.cfg.head, self.rng,
                                    sparse_input=self.cfg.preset == "karpathy").eval()
        self.rollouts = pg.Rollouts(n, np.int8 if self.cfg.preset == "karpathy" else np.float32)
        self.obs, _ = self.venv.reset(seed=seed)
        self.ep_return, self.ep_length = np.zeros(n), np.zeros(n, np.int64)
        self.version = -1
        self.piece_version = np.full(n, -1)  # (N,): weights version each unfinished piece began with

    def set_weights(self, version, weights):
        self.model.load_state_dict(weights)
        self.version = version

    def collect(self, min_steps):
        """Step until min_steps steps of finished pieces are in hand; return them (obs kept in their
        storage dtype: int8 on Karpathy's preset), the finished episodes and the versions used."""
        cfg, r = self.cfg, self.rollouts
        reset = cfg.reset_on_reward == "yes"
        episodes, oldest = [], self.version
        while r.batch_steps < min_steps:
            probs = self.pg.action_probs(self.model, self.obs, cfg.head)  # (N, A)
            actions = self.pg.sample_actions(probs, self.rng)
            next_obs, rewards, terminated, truncated, _ = self.venv.step(actions)
            done = terminated | truncated
            self.ep_return += rewards
            self.ep_length += 1
            for i in range(cfg.num_envs):
                if not r.obs[i]:
                    self.piece_version[i] = self.version
                r.add(i, self.obs[i], actions[i], float(rewards[i]))
                if done[i] or (reset and rewards[i] != 0):
                    oldest = min(oldest, self.piece_version[i])
                    r.finish(i, cfg.gamma, reset)
                if done[i]:
                    episodes.append((float(self.ep_return[i]), int(self.ep_length[i])))
                    self.ep_return[i], self.ep_length[i] = 0.0, 0
            self.obs = next_obs
        pieces, steps = r.batch, r.batch_steps
        r.batch, r.batch_steps = [], 0
        return {"worker": self.index, "version": self.version, "oldest_version": int(oldest),
                "steps": steps, "episodes": episodes,
                "obs": np.concatenate([p[0] for p in pieces]),  # (B, D)
                "actions": np.concatenate([p[1] for p in pieces]),  # (B,)
                "returns": np.concatenate([p[2] for p in pieces])}  # (B,)


class EvalWorker:
    """Plays whole games with a checkpoint sent as bytes (every machine reads the same file)."""

    def __init__(self, checkpoint_bytes, sticky, greedy, epsilon=None):
        import agents
        from agents.evaluation import play_rule
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "checkpoint.npz")
            with open(path, "wb") as f:
                f.write(checkpoint_bytes)
            self.agent = agents.load(path)
        self.sticky, self.explore = sticky, play_rule(self.agent, greedy, epsilon)

    def play(self, k, seed):
        from agents.evaluation import make_eval_env, play_game
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


# ----------------------------------------------------------------------------- training

def lost_reporter(run, callback):
    def on_lost(i, error):
        run.message(f"worker {i} lost ({short(error)}): replaced; its unreturned steps are not counted")
        if callback:
            callback({"event": "worker_lost", "step": run.step, "worker": i, "error": short(error)})
    return on_lost


def report_rollout(run, callback, result, generation):
    """Count a delivered result: steps, finished episodes (progress.csv), a "rollout" event."""
    run.step += result["steps"]
    for ret, length in result["episodes"]:
        mean = run.log_episode(ret, length)
        if callback:
            callback({"event": "episode", "step": run.step, "episode": run.episode, "return": ret,
                      "length": length, "running_mean": mean})
    if callback:
        callback({"event": "rollout", "step": run.step, "worker": result["worker"], "generation": generation,
                  "version": result["version"], "steps": result["steps"]})


def stopping(cfg, run, deadline):
    return run.stop_requested or (cfg.total_steps and run.step >= cfg.total_steps) or time.monotonic() >= deadline


def train_pg(cfg, run, callback=None, init=None, resume=None):
    """agents.policy_gradient.train with cfg.workers actors collecting the pieces; same arguments,
    same run dir and checkpoint."""
    from agents import policy_gradient as pg
    rng = np.random.default_rng(cfg.seed)
    probe = envs.make_vector(cfg.game, cfg.preset, 1, sticky=cfg.sticky)
    run.env = probe.grok_spec
    obs_shape, n_actions = probe.single_observation_space.shape, int(probe.single_action_space.n)
    probe.close()
    learner = pg.Learner(cfg, int(np.prod(obs_shape)), n_actions, rng)
    if init is not None:
        learner.model.load_state_dict(init[0]["model"].state_dict())
    if resume is not None:
        models, header, rest = resume
        learner.restore(models, header, rest)
        rng.bit_generator.state = header["rng"]
        run.restore(header)

    def save(final=False):
        info, opt_arrays = learner.opt.state_dict()
        header = {**pg.checkpoint_header(cfg, obs_shape, n_actions, rng), "optim": info}
        return run.save({"model": learner.model}, header, {f"optim.{k}": v for k, v in opt_arrays.items()},
                        final=final)

    ray, started = start_ray(cfg.ray_address, cfg.workers)
    fleet = None
    try:
        config, first_step = dataclasses.asdict(cfg), run.step
        fleet = Fleet(ray, PGWorker, lambda i, g: (config, i, worker_seed(cfg.seed, first_step, i, g)),
                      cfg.workers, lost_reporter(run, callback))
        fleet.broadcast(learner.model.state_dict())
        per_call = math.ceil(cfg.batch_steps / cfg.workers)
        batch, batch_steps, updates = [], 0, 0
        deadline = time.monotonic() + cfg.hours * 3600 if cfg.hours > 0 else math.inf
        while not stopping(cfg, run, deadline):
            if not fleet.pending:  # a new round: every actor collects with the same, newest weights
                for i in range(cfg.workers):
                    fleet.call(i, "collect", per_call)
            got = fleet.next(timeout=1.0)
            if got is not None and got[1] is not None:
                i, result = got
                report_rollout(run, callback, result, fleet.generation[i])
                batch.append(result)
                batch_steps += len(result["returns"])
            if not fleet.pending and batch_steps >= cfg.batch_steps:
                batch.sort(key=lambda b: b["worker"])  # arrival order must not change the sums: runs repeat
                obs = np.concatenate([b["obs"] for b in batch]).astype(np.float32)  # (B, D)
                metrics = learner.update(obs, np.concatenate([b["actions"] for b in batch]),
                                         np.concatenate([b["returns"] for b in batch]))
                learner.model.eval()
                batch, batch_steps = [], 0
                check_update(learner, metrics, run, pg.NumericalError)
                updates += 1
                if updates % PG_BROADCAST_EVERY == 0:
                    fleet.broadcast(learner.model.state_dict())
                run.log_update({"version": fleet.version, **metrics}, callback)
            if run.due():
                save()
        save(final=True)
    finally:
        shut_down(ray, fleet, started)
    return learner


def check_update(learner, metrics, run, error):
    """NaN/inf updates: say so, and stop with `error` after max_bad_updates in a row (as train does)."""
    if not metrics["skipped"]:
        return
    run.message(f"update at step {run.step} produced NaN/inf: skipped "
                f"({learner.bad_in_a_row} in a row, {learner.bad_total} in all)")
    if learner.bad_in_a_row >= learner.cfg.max_bad_updates:
        raise error(f"{learner.bad_in_a_row} updates in a row produced NaN/inf; stopped without "
                    f"overwriting {run.checkpoint_path}")


def shut_down(ray, fleet, started):
    if fleet is not None:
        fleet.shutdown()
    if started:
        ray.shutdown()


# ----------------------------------------------------------------------------- evaluation

def evaluate(path, episodes, seed=0, sticky=True, greedy=False, workers=2, ray_address="", on_game=None,
             epsilon=None):
    """agents.evaluation.evaluate's games and summary, played on `workers` actors that each load the
    checkpoint from its bytes (see the module's note on randomness); greedy and epsilon as in
    agents.evaluation.play_rule. on_game(k, return, length) is called in game order."""
    with open(path, "rb") as f:
        blob = f.read()
    ray, started = start_ray(ray_address, workers)
    fleet = None
    try:
        blob_ref = ray.put(blob)
        fleet = Fleet(ray, EvalWorker, lambda i, g: (blob_ref, sticky, greedy, epsilon), min(workers, episodes))
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
    returns = np.array([done[k][0] for k in range(episodes)], np.float64)
    return {"episodes": episodes, "mean_return": float(returns.mean()), "std_return": float(returns.std()),
            "min_return": float(returns.min()), "max_return": float(returns.max()),
            "mean_length": float(np.mean([done[k][1] for k in range(episodes)])), "returns": returns.tolist()}
