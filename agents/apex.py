"""DQN with its envs on Ray actors, Ape-X style (Horgan et al. 2018), the learner one numpy process.

Each DQNWorker (agents/distributed.py starts, feeds and replaces the actors) steps its num_envs
envs with its own copy of the Q-network and returns chunks of DQN_CHUNK_STEPS transitions, tagged
with the weights version it acted with. Only the newest frame of each observation travels: a replay
slot keeps obs[-1] and the buffer rebuilds the stacks (agents/replay.py). The learner keeps one
ReplayBuffer per actor, so each actor's steps stay in order, and samples them as one. It keeps the
single-process pace of one update every train_freq agent steps (so a run learns from its samples as
agents/dqn.py does; actors only take the envs and acting off the learner) and broadcasts the online
network every DQN_BROADCAST_EVERY updates.

Exploration: env lane j of n (over all actors) uses max(epsilon_at(step), 0.4 ** (1 + 7 j / (n - 1))):
the usual schedule first, then Ape-X's fixed spread, from 0.4 down to 0.4 ** 8, so some lanes stay
nearly greedy while others keep exploring.
"""
import dataclasses
import math
import time

import numpy as np

import envs
from agents.distributed import (Fleet, WorkerError, check_update, lost_reporter, report_rollout, shut_down,
                                start_ray, stopping, worker_seed)
from agents.replay import Batch, ReplayBuffer

DQN_BROADCAST_EVERY = 50  # DQN updates every 4 steps: 50 updates (200 agent steps; Ape-X: 100)
DQN_CHUNK_STEPS = 256  # agent steps per actor call (Ape-X sends 50-step batches)


def apex_epsilons(n):
    """Ape-X's per-lane exploration: 0.4 ** (1 + 7 j / (n - 1)), from 0.4 down to 0.4 ** 8."""
    if n == 1:
        return np.array([0.4])
    return 0.4 ** (1 + 7 * np.arange(n) / (n - 1))


def newest_frames(obs, stack):
    """(N, K, H, W) stacks -> (N, 1, H, W): a replay slot keeps only obs[-1] (agents/replay.py)."""
    return obs[:, -1:] if stack > 1 else obs


class DQNWorker:
    """num_envs envs, a Q-network copy and per-lane epsilons; collect() returns transitions."""

    def __init__(self, cfg, index, seed, epsilons):
        from agents import dqn
        self.dqn, self.cfg, self.index = dqn, dqn.Config(**cfg), index
        self.rng = np.random.default_rng(seed)
        c = self.cfg
        self.venv = envs.make_vector(c.game, c.preset, c.num_envs, sticky=c.sticky, training=False)
        space = self.venv.single_observation_space
        self.n_actions = int(self.venv.single_action_space.n)
        self.obs_scale = 1.0 / 255.0 if space.dtype == np.uint8 else 1.0
        self.model = dqn.build_q_network(space.shape, self.n_actions, c.network, c.hidden, c.dueling,
                                         self.rng, c.quantiles).eval()
        self.stack = 4 if c.preset == "deepmind" else 1
        self.floor = np.asarray(epsilons, np.float64)  # (N,): this actor's lanes' Ape-X epsilons
        self.obs, info = self.venv.reset(seed=seed)
        self.lives = info.get("lives") if c.life_loss_terminal else None
        self.fresh = True  # the next chunk carries the first observations (buffer.start)
        self.game_return, self.game_length = np.zeros(c.num_envs), np.zeros(c.num_envs, np.int64)
        self.version = -1

    def set_weights(self, version, weights):
        self.model.load_state_dict(weights)
        self.version = version

    def collect(self, steps, step):
        """About `steps` agent steps at the exploration of agent step `step`, as arrays over (T, N)."""
        c, n = self.cfg, self.cfg.num_envs
        eps = np.maximum(self.dqn.epsilon_at(step, c), self.floor)  # (N,)
        start = newest_frames(self.obs, self.stack).copy() if self.fresh else None
        self.fresh = False
        out = {k: [] for k in ("actions", "rewards", "terminal", "ended", "next")}
        final_at, final_frames, episodes = [], [], []
        for t in range(max(1, math.ceil(steps / n))):
            explore = self.rng.random(n) < eps  # (N,)
            if explore.all():  # the network's answer would go unused (epsilon 1 while the replay fills)
                greedy = np.zeros(n, np.int64)
            else:
                greedy = self.dqn.q_values(self.model, self.obs, self.obs_scale, c.quantiles).argmax(axis=1)
            actions = np.where(explore, self.rng.integers(self.n_actions, size=n), greedy)
            next_obs, rewards, terminated, truncated, info = self.venv.step(actions)
            ended = terminated | truncated
            terminal = terminated.copy()
            if self.lives is not None and "lives" in info:
                terminal |= (info["lives"] < self.lives) & ~ended  # a lost life, the game goes on
                self.lives = info["lives"]
            for i in np.flatnonzero(ended):
                final_at.append((t, i))
                final_frames.append(np.array(newest_frames(info["final_obs"][i][None], self.stack)[0]))  # a copy
                episodes.append((float(self.game_return[i] + rewards[i]), int(self.game_length[i] + 1)))
            self.game_return = np.where(ended, 0.0, self.game_return + rewards)
            self.game_length = np.where(ended, 0, self.game_length + 1)
            for k, v in zip(out, (actions, np.sign(rewards) if c.preset == "deepmind" else rewards,
                                  terminal, ended, newest_frames(next_obs, self.stack))):
                out[k].append(np.array(v))
            self.obs = next_obs
        chunk = {k: np.stack(v) for k, v in out.items()}  # (T, N, ...)
        chunk.update(worker=self.index, version=self.version, start=start, episodes=episodes,
                     steps=int(chunk["actions"].size), final_at=np.array(final_at, np.int64).reshape(-1, 2),
                     final_frames=np.array(final_frames))
        return chunk


class SharedReplay:
    """The learner's replay: one ReplayBuffer per actor, sampled as one (uniform over transitions)."""

    def __init__(self, buffers, rng):
        self.buffers, self.rng = buffers, rng

    def __len__(self):
        return sum(len(b) for b in self.buffers)

    def sampleable(self):
        return sum(b.sampleable() for b in self.buffers)

    def add_chunk(self, b, chunk):
        """A DQNWorker chunk into buffer b, step by step as the single-process loop adds them."""
        buf = self.buffers[b]
        if chunk["start"] is not None:
            buf.start(chunk["start"])
        finals = {tuple(at): frame for at, frame in zip(chunk["final_at"].tolist(), chunk["final_frames"])}
        for t in range(len(chunk["actions"])):
            final = None
            if chunk["ended"][t].any():
                final = chunk["next"][t].copy()
                for i in np.flatnonzero(chunk["ended"][t]):
                    final[i] = finals[(t, int(i))]
            buf.add(chunk["actions"][t], chunk["rewards"][t], chunk["terminal"][t], chunk["ended"][t],
                    chunk["next"][t], final)

    def sample(self, batch_size, beta=None):  # beta: prioritized replay's, which runs single-process only
        weights = np.array([b.sampleable() for b in self.buffers], np.float64)
        counts = self.rng.multinomial(batch_size, weights / weights.sum())
        parts = [b.sample(int(c)) for b, c in zip(self.buffers, counts) if c > 0]
        return Batch(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in Batch._fields
                        if getattr(parts[0], f) is not None})  # uniform parts: no weights or index


def train_dqn(cfg, run, callback=None, init=None, resume=None, stopwatch=None):
    """agents.dqn.train with cfg.workers actors stepping the envs (Ape-X); same arguments, run dir
    and checkpoint. The replay buffers are not saved (save_buffer): a resumed run refills them."""
    from agents import dqn
    rng = np.random.default_rng(cfg.seed)
    probe = envs.make_vector(cfg.game, cfg.preset, 1, sticky=cfg.sticky, training=False)
    run.env = probe.grok_spec
    space, n_actions = probe.single_observation_space, int(probe.single_action_space.n)
    probe.close()
    obs_scale = 1.0 / 255.0 if space.dtype == np.uint8 else 1.0
    stack = 4 if cfg.preset == "deepmind" else 1
    if cfg.buffer_size // cfg.workers // cfg.num_envs <= stack + cfg.n_step + 1:
        raise WorkerError(f"buffer_size {cfg.buffer_size} is too small for {cfg.workers} workers of "
                          f"{cfg.num_envs} envs: raise --buffer-size")
    learner = dqn.Learner(cfg, space.shape, n_actions, obs_scale, rng)
    agent = dqn.QAgent(learner.online, run.env, n_actions, obs_scale, cfg.eval_epsilon, rng=rng,
                       quantiles=cfg.quantiles)
    replay = SharedReplay([ReplayBuffer(cfg.buffer_size // cfg.workers, space.shape, space.dtype, cfg.num_envs,
                                        stack, cfg.n_step, cfg.gamma, rng) for _ in range(cfg.workers)], rng)
    if init is not None:
        weights = dqn.init_weights(init, cfg)
        learner.online.load_state_dict(weights)
        learner.target.load_state_dict(weights)
    if resume is not None:
        learner.restore(*resume)
        rng.bit_generator.state = resume[1]["rng"]
        run.restore(resume[1])
        run.message("replay buffers are not saved with workers: refilling them before learning again")
    eval_log = dqn.EvalLog(run)
    eval_log.start(run.step)

    def save(final=False):
        models, fields, extra = learner.checkpoint()
        header = {"agent": "dqn", "obs_shape": list(space.shape), "n_actions": n_actions, "obs_scale": obs_scale,
                  "rng": rng.bit_generator.state, **fields}
        return run.save(models, header, extra, final=final)

    ray, started = start_ray(cfg.ray_address, cfg.workers)
    fleet, clock = None, stopwatch or dqn.Stopwatch()
    try:
        config, first_step, n = dataclasses.asdict(cfg), run.step, cfg.num_envs
        eps = apex_epsilons(cfg.workers * n)
        fleet = Fleet(ray, DQNWorker, lambda i, g: (config, i, worker_seed(cfg.seed, first_step, i, g),
                                                    eps[i * n:(i + 1) * n]), cfg.workers, lost_reporter(run, callback))
        fleet.broadcast(learner.online.state_dict())
        for i in range(cfg.workers):
            fleet.call(i, "collect", DQN_CHUNK_STEPS, run.step)
        next_update, last, updates = run.step + cfg.train_freq, {}, 0
        next_sync = (run.step // cfg.target_update + 1) * cfg.target_update
        next_eval = (run.step // cfg.eval_every + 1) * cfg.eval_every if cfg.eval_every else math.inf
        next_log = (run.step // cfg.log_every + 1) * cfg.log_every
        deadline = time.monotonic() + cfg.hours * 3600 if cfg.hours > 0 else math.inf
        clock.mark("setup")
        while not stopping(cfg, run, deadline):
            got = fleet.next(timeout=1.0)
            clock.mark("wait")
            if got is not None and got[1] is not None:
                i, chunk = got
                replay.add_chunk(i, chunk)
                report_rollout(run, callback, chunk, fleet.generation[i])
                clock.mark("replay_add")
                learning = replay.sampleable() >= max(cfg.learning_starts, cfg.batch_size)
                while run.step >= next_update:
                    next_update += cfg.train_freq
                    if learning:
                        last = learner.learn(replay, run, clock)
                        check_update(learner, last, run, dqn.NumericalError)
                        updates += 1
                        if updates % DQN_BROADCAST_EVERY == 0:
                            fleet.broadcast(learner.online.state_dict())
                            clock.mark("broadcast")
                while run.step >= next_sync:
                    next_sync += cfg.target_update
                    if learning:
                        learner.sync_target()
                if run.step >= next_eval:
                    next_eval = (run.step // cfg.eval_every + 1) * cfg.eval_every
                    summary = dqn.evaluate_now(cfg, agent, eval_log, run.step)
                    if callback:
                        callback({"event": "eval", "step": run.step, **summary})
                    clock.mark("eval")
                if run.step >= next_log:
                    next_log = (run.step // cfg.log_every + 1) * cfg.log_every
                    run.log_update({"updates": learner.updates, "buffer": len(replay), "version": fleet.version,
                                    **last, "seconds": dict(clock.totals)}, callback)
            if got is not None:
                fleet.call(got[0], "collect", DQN_CHUNK_STEPS, run.step)
            if run.due():
                save()
            clock.mark("other")
        save(final=True)
    finally:
        shut_down(ray, fleet, started)
    return learner
