"""REINFORCE from pixels: Karpathy's "Pong from Pixels" on the nets/ stack, one training loop.

The policy is a two-layer MLP: on Karpathy's preset his 6400 -> 200 -> 1 with a sigmoid giving
P(down), elsewhere a softmax over the game's actions. Returns are discounted and restart whenever a
point is scored (reward != 0) in Pong-like games, advantages are standardized over each update batch,
and the gradient of -advantage * log pi(action) goes through nets' BCE / softmax cross-entropy with
per-sample weights. A point is a complete piece of experience: an env's steps join the update batch
as soon as its point (or episode) ends, so updates need not wait for whole 21-point games.

Experience comes from a source: LocalEnvs (num_envs envs in this process) or, with workers, RayActors
(PGWorker actors in synchronous rounds: REINFORCE has no correction for stale experience). Both step
their envs with the same Pieces class; train() is the one loop.
"""
import dataclasses
import math

import numpy as np

import envs
from agents.distributed import Fleet, lost_reporter, report_rollout, shut_down, start_ray, worker_seed
from agents.evaluation import SideGames
from agents.run import check_update, deadline, finished
from agents.schedule import parse_schedule, scheduled
from nets import Adam, BCEWithLogits, Linear, ReLU, RMSProp, Sequential, SoftmaxCrossEntropy, clip_grad_norm, softmax
from nets.layers import sigmoid

BROADCAST_EVERY = 1  # updates between broadcasts to the actors; 1 keeps REINFORCE on-policy
# the values a setting may take (its flag's choices; resolved() refuses any other)
CHOICES = {"preset": ("karpathy", "deepmind", "classic"), "head": ("auto", "sigmoid", "softmax"),
           "optimizer": ("rmsprop", "adam"), "reset_on_reward": ("auto", "yes", "no")}


@dataclasses.dataclass
class Config:
    agent: str = "pg"  # which algorithm (fixed)
    game: str = "pong"  # short name or env id; an Atari id names its protocol: PongNoFrameskip-v4 no sticky
    # actions, ALE/Pong-v5 sticky ones (--list-games lists them)
    preset: str = ""  # karpathy / deepmind / classic; empty: the game's default (Pong: karpathy)
    sticky: bool = True  # ALE v5 sticky actions (0.25); False: the NoFrameskip-v4 protocol
    seed: int = 0  # seeds the network, the action sampling and the envs
    total_steps: int = 0  # stop after this many agent steps (0: no limit)
    hours: float = 0.0  # stop after this many hours of wall clock in all, a resumed run's included (0: no limit)
    num_envs: int = 8  # envs stepped together with one batched forward pass
    hidden: int = 200  # hidden units (Karpathy: 200)
    head: str = "auto"  # sigmoid (two actions, Karpathy) or softmax; auto: sigmoid on karpathy preset
    optimizer: str = "rmsprop"  # rmsprop (Karpathy) or adam
    lr: float = 1e-3  # learning rate (own runs; Karpathy used 1e-4 with 10-episode batches)
    lr_schedule: str = ""  # piecewise learning rate by agent step, "0:1e-3,6330000:3e-4": each value from its
    # step on (the shipped agent's drops, made by hand on resumes); empty: lr throughout
    rmsprop_decay: float = 0.99  # RMSProp decay (Karpathy: 0.99)
    gamma: float = 0.99  # discount (Karpathy: 0.99)
    batch_steps: int = 8000  # update once this many steps of finished points/episodes are in hand
    batch_schedule: str = ""  # piecewise batch_steps by agent step, "0:8000,27400000:32000"; empty: batch_steps
    reset_on_reward: str = "auto"  # restart returns at each point: yes / no / auto (yes on Atari)
    max_grad_norm: float = 0.0  # clip the gradient's global norm (0: off)
    eval_every: int = 1_000_000  # agent steps between evaluations on whole games into eval.csv (0: never)
    eval_episodes: int = 10  # games per evaluation (sampled actions, the training protocol)
    max_bad_updates: int = 5  # stop after this many NaN/inf updates in a row
    checkpoint_minutes: float = 5.0  # write checkpoint.npz this often
    keep_snapshots: int = 0  # also keep the playing weights of the last K saves in snapshots/ (ship --average)
    workers: int = 0  # Ray actors stepping the envs (RayActors below); 0: all in this process
    ray_address: str = ""  # with workers: join this Ray cluster (auto, HOST:6379); empty: start a local Ray


def resolved(cfg):
    """Config with derived values filled in (preset, head, reset_on_reward)."""
    env_id = envs.resolve(cfg.game)
    preset = cfg.preset or envs.default_preset(env_id)
    spec = envs.env_spec(env_id, preset, cfg.sticky)
    head = cfg.head if cfg.head != "auto" else ("sigmoid" if preset == "karpathy" else "softmax")
    reset = cfg.reset_on_reward
    if reset == "auto":
        reset = "yes" if spec["env_id"].startswith("ALE/") else "no"
    if head not in ("sigmoid", "softmax") or reset not in ("yes", "no"):
        raise ValueError(f"head must be sigmoid/softmax/auto and reset_on_reward yes/no/auto, got {cfg.head!r}, "
                         f"{cfg.reset_on_reward!r}")
    if cfg.optimizer not in CHOICES["optimizer"]:
        raise ValueError(f"optimizer must be rmsprop or adam, got {cfg.optimizer!r}")
    for name in ("num_envs", "hidden", "batch_steps", "eval_episodes"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("seed", "total_steps", "hours", "keep_snapshots", "eval_every", "max_grad_norm"):
        if not getattr(cfg, name) >= 0 or not math.isfinite(getattr(cfg, name)):
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.lr > 0 or not math.isfinite(cfg.lr):
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    parse_schedule(cfg.lr_schedule, "lr_schedule")
    if any(value != int(value) or value < 1 for _, value in parse_schedule(cfg.batch_schedule, "batch_schedule")):
        raise ValueError(f"batch_schedule: each batch_steps must be a whole number >= 1, got {cfg.batch_schedule!r}")
    return dataclasses.replace(cfg, preset=preset, head=head, reset_on_reward=reset)


def lr_at(step, cfg):
    """The learning rate at agent step `step`: lr_schedule's value in force there, else lr."""
    return scheduled(parse_schedule(cfg.lr_schedule, "lr_schedule"), step, cfg.lr)


def batch_steps_at(step, cfg):
    """The update's batch size in agent steps at `step`: batch_schedule's value there, else batch_steps."""
    return int(scheduled(parse_schedule(cfg.batch_schedule, "batch_schedule"), step, cfg.batch_steps))


def build_policy(obs_size, n_actions, hidden, head, rng, sparse_input=False):
    """obs -> hidden (ReLU) -> 1 logit (sigmoid head) or n_actions logits (softmax head).

    sparse_input: the observations are mostly zeros (Karpathy's frame differences), so the first
    layer multiplies only the pixels that changed somewhere in the batch (see nets.Linear)."""
    out = 1 if head == "sigmoid" else n_actions
    return Sequential(Linear(obs_size, hidden, input_grad=False, sparse_input=sparse_input, rng=rng),
                      ReLU(), Linear(hidden, out, rng=rng))


def action_probs(model, obs, head):
    """(N, obs) -> (N, n_actions) probabilities."""
    out = model.forward(np.asarray(obs, dtype=np.float32))
    if head == "sigmoid":
        p1 = sigmoid(out[:, 0])  # P(action 1)
        return np.stack([1.0 - p1, p1], axis=1)
    return softmax(out)


def sample_actions(probs, rng):
    """One action per row of probs, by inverse CDF on one uniform draw each."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1)


def discounted_returns(rewards, gamma, reset_on_reward):
    """G_t = r_t + gamma G_{t+1}; with reset_on_reward the sum restarts after every nonzero reward."""
    out = np.zeros(len(rewards), np.float32)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        if reset_on_reward and rewards[t] != 0:
            running = 0.0
        running = running * gamma + rewards[t]
        out[t] = running
    return out


class PolicyAgent:
    """A trained policy that acts: act(obs, explore) -> (actions, probs). Used by evaluate and watch."""

    kind = "pg"

    def __init__(self, model, head, env, n_actions, seed=0):
        self.model = model.eval()
        self.head = head
        self.env = env
        self.n_actions = n_actions
        self.rng = np.random.default_rng(seed)

    def act(self, obs, explore=True):
        """obs (N, ...) -> actions (N,), probabilities (N, A). explore=False takes the most likely
        action; by default the policy samples, as it did in training."""
        probs = action_probs(self.model, obs, self.head)
        if explore:
            return sample_actions(probs, self.rng), probs
        return probs.argmax(axis=1), probs


class Rollouts:
    """Per-env pieces of experience; a piece joins the batch when its point or episode ends."""

    def __init__(self, num_envs, store_dtype):
        self.store_dtype = store_dtype
        self.obs = [[] for _ in range(num_envs)]
        self.actions = [[] for _ in range(num_envs)]
        self.rewards = [[] for _ in range(num_envs)]
        self.batch = []  # [(obs (T, D), actions (T,), returns (T,))]
        self.batch_steps = 0

    def add(self, i, obs, action, reward):
        self.obs[i].append(obs.astype(self.store_dtype))
        self.actions[i].append(action)
        self.rewards[i].append(reward)

    def finish(self, i, gamma, reset_on_reward):
        if not self.obs[i]:
            return
        returns = discounted_returns(self.rewards[i], gamma, reset_on_reward)
        self.batch.append((np.stack(self.obs[i]), np.array(self.actions[i]), returns))
        self.batch_steps += len(returns)
        self.obs[i], self.actions[i], self.rewards[i] = [], [], []

    def take(self):
        obs = np.concatenate([b[0] for b in self.batch])  # (B, D), stored dtype: the net converts
        actions = np.concatenate([b[1] for b in self.batch])  # (B,)
        returns = np.concatenate([b[2] for b in self.batch])  # (B,)
        self.batch, self.batch_steps = [], 0
        return obs, actions, returns


class Learner:
    """The policy network, its optimizer and the REINFORCE update."""

    def __init__(self, cfg, obs_size, n_actions, rng):
        self.cfg = cfg
        self.model = build_policy(obs_size, n_actions, cfg.hidden, cfg.head, rng,
                                  sparse_input=cfg.preset == "karpathy")
        if cfg.optimizer == "adam":
            self.opt = Adam(self.model, lr=cfg.lr)
        else:
            self.opt = RMSProp(self.model, lr=cfg.lr, decay=cfg.rmsprop_decay, eps=1e-5)
        self.loss = BCEWithLogits() if cfg.head == "sigmoid" else SoftmaxCrossEntropy()
        self.bad_in_a_row = 0
        self.bad_total = 0

    def update(self, obs, actions, returns):
        """One policy-gradient step; returns a metrics dict (skipped=True when NaN/inf appeared)."""
        adv = (returns - returns.mean()) / (returns.std() + 1e-8)  # (B,)
        out = self.model.train().forward(obs)  # (B, 1) or (B, A)
        if self.cfg.head == "sigmoid":
            value = self.loss.forward(out[:, 0], actions.astype(np.float32), weights=adv)
            dout = self.loss.backward()[:, None]
        else:
            value = self.loss.forward(out, actions, weights=adv)
            dout = self.loss.backward()
        # summed over samples, not averaged (Karpathy's convention): keeps gradients well above
        # RMSProp's eps however large the batch
        self.model.backward((dout * len(adv)).astype(np.float32))
        grad_sq = sum(float(np.vdot(g, g)) for _, _, g in self.model.parameters())
        if not (math.isfinite(value) and math.isfinite(grad_sq)):
            self.bad_in_a_row += 1
            self.bad_total += 1
            return {"loss": value, "skipped": True}
        if self.cfg.max_grad_norm > 0:
            clip_grad_norm(self.model, self.cfg.max_grad_norm)
        self.opt.step()
        self.bad_in_a_row = 0
        return {"loss": value, "grad_norm": math.sqrt(grad_sq), "skipped": False}

    def restore(self, models, header, rest):
        """Weights and optimizer state from the run's checkpoint."""
        self.model.load_state_dict(models["model"].state_dict())
        self.opt.load_state_dict(header.get("optim", {"t": 0}),
                                 {k[6:]: v for k, v in rest.items() if k.startswith("optim.")})
        self.opt.lr = self.cfg.lr  # the run's config rules: `--resume RUN --lr X` changes it


def checkpoint_header(cfg, obs_shape, n_actions, rng):
    return {"agent": "pg", "obs_shape": list(obs_shape), "n_actions": n_actions,
            "head": cfg.head, "rng": rng.bit_generator.state}


# ----------------------------------------------------------------------------- acting

def store_dtype(preset):
    return np.int8 if preset == "karpathy" else np.float32  # Karpathy's frame differences are -1/0/1


class Pieces:
    """The rollout step, written once for LocalEnvs and the Ray actors: num_envs envs stepped on the
    policy, their steps cut into pieces that join `rollouts.batch` when a point or an episode ends.
    `version` tags the pieces with the weights they began with (an actor's weights version)."""

    def __init__(self, cfg, venv, rng, seed):
        self.cfg, self.venv, self.rng, n = cfg, venv, rng, cfg.num_envs
        self.reset_on_reward = cfg.reset_on_reward == "yes"
        self.rollouts = Rollouts(n, store_dtype(cfg.preset))
        self.obs, _ = venv.reset(seed=seed)
        self.ep_return, self.ep_length = np.zeros(n), np.zeros(n, np.int64)
        self.version, self.oldest = -1, -1
        self.piece_version = np.full(n, -1)  # (N,): weights version each unfinished piece began with

    def step(self, model):
        """One step of every env -> [(return, length) of each episode that ended]."""
        cfg, r, reset = self.cfg, self.rollouts, self.reset_on_reward
        probs = action_probs(model, self.obs, cfg.head)  # (N, A)
        actions = sample_actions(probs, self.rng)
        next_obs, rewards, terminated, truncated, _ = self.venv.step(actions)
        done = terminated | truncated
        self.ep_return += rewards
        self.ep_length += 1
        episodes = []
        for i in range(cfg.num_envs):
            if not r.obs[i]:
                self.piece_version[i] = self.version
            r.add(i, self.obs[i], actions[i], float(rewards[i]))
            if done[i] or (reset and rewards[i] != 0):
                self.oldest = min(self.oldest, self.piece_version[i])
                r.finish(i, cfg.gamma, reset)
            if done[i]:
                episodes.append((float(self.ep_return[i]), int(self.ep_length[i])))
                self.ep_return[i], self.ep_length[i] = 0.0, 0
        self.obs = next_obs
        return episodes


class PGWorker:
    """A Ray actor (agents/distributed.py starts it): num_envs envs and a copy of the policy;
    collect() returns finished pieces of experience."""

    def __init__(self, cfg, index, seed):
        self.cfg, self.index = Config(**cfg), index
        self.rng = np.random.default_rng(seed)
        c = self.cfg
        self.venv = envs.make_vector(c.game, c.preset, c.num_envs, sticky=c.sticky)
        obs_size = int(np.prod(self.venv.single_observation_space.shape))
        n_actions = int(self.venv.single_action_space.n)
        self.model = build_policy(obs_size, n_actions, c.hidden, c.head, self.rng,
                                  sparse_input=c.preset == "karpathy").eval()
        self.pieces = Pieces(c, self.venv, self.rng, seed)

    @property
    def version(self):
        return self.pieces.version

    def set_weights(self, version, weights):
        self.model.load_state_dict(weights)
        self.pieces.version = version

    def collect(self, min_steps):
        """Step until min_steps steps of finished pieces are in hand; return them (obs kept in their
        storage dtype: int8 on Karpathy's preset), the finished episodes and the versions used."""
        p, r = self.pieces, self.pieces.rollouts
        episodes, p.oldest = [], p.version
        while r.batch_steps < min_steps:
            episodes += p.step(self.model)
        pieces, steps = r.batch, r.batch_steps
        r.batch, r.batch_steps = [], 0
        return {"worker": self.index, "version": p.version, "oldest_version": int(p.oldest),
                "steps": steps, "episodes": episodes,
                "obs": np.concatenate([b[0] for b in pieces]),  # (B, D)
                "actions": np.concatenate([b[1] for b in pieces]),  # (B,)
                "returns": np.concatenate([b[2] for b in pieces])}  # (B,)

    def close(self):
        self.venv.close()


# ----------------------------------------------------------------------------- experience sources

class LocalEnvs:
    """Experience from num_envs envs in this process: one vector step per collect(); a batch is
    ready once batch_steps steps of finished pieces are in hand."""

    def __init__(self, cfg, rng):
        self.cfg, self.rng, self.batch_steps = cfg, rng, cfg.batch_steps
        self.venv = envs.make_vector(cfg.game, cfg.preset, cfg.num_envs, sticky=cfg.sticky)
        self.spec = self.venv.grok_spec
        self.obs_shape = self.venv.single_observation_space.shape
        self.n_actions = int(self.venv.single_action_space.n)

    def start(self, run, learner, callback):
        self.model = learner.model
        # envs are re-seeded from (seed, step) so a resumed run does not replay the same games
        self.pieces = Pieces(self.cfg, self.venv, self.rng, int(self.cfg.seed * 1_000_003 + run.step) % (2**31))

    def collect(self, run, callback):
        run.count(self.cfg.num_envs, self.pieces.step(self.model), callback)

    def batch(self):
        """(obs in their storage dtype: the network converts, actions, returns), or None."""
        rollouts = self.pieces.rollouts
        return rollouts.take() if rollouts.batch_steps >= self.batch_steps else None

    def updated(self, learner):
        pass

    def status(self):
        return {}

    def close(self):
        self.venv.close()


class RayActors:
    """Experience from `workers` PGWorker actors in synchronous rounds: every actor collects
    batch_steps / workers steps of finished pieces with the newest weights; once all have answered,
    the batch is ready. A round waits for its slowest actor rather than learn from stale games:
    letting fast actors run on, one update stale, made CartPole runs climb to 400 and collapse.
    Pieces an actor holds unfinished at the end of a round carry over to its next one."""

    def __init__(self, cfg, rng):
        self.cfg, self.batch_steps = cfg, cfg.batch_steps
        probe = envs.make_vector(cfg.game, cfg.preset, 1, sticky=cfg.sticky)
        self.spec = probe.grok_spec
        self.obs_shape = probe.single_observation_space.shape
        self.n_actions = int(probe.single_action_space.n)
        probe.close()
        self.ray, self.started, self.fleet = None, False, None
        self.results, self.steps, self.updates = [], 0, 0

    def start(self, run, learner, callback):
        cfg = self.cfg
        self.ray, self.started = start_ray(cfg.ray_address, cfg.workers)
        config, first_step = dataclasses.asdict(cfg), run.step
        self.fleet = Fleet(self.ray, PGWorker, lambda i, g: (config, i, worker_seed(cfg.seed, first_step, i, g)),
                           cfg.workers, lost_reporter(run, callback))
        self.fleet.broadcast(learner.model.state_dict())

    def collect(self, run, callback):
        if not self.fleet.pending:  # a new round: every actor collects with the same, newest weights
            per_call = math.ceil(self.batch_steps / self.cfg.workers)
            for i in range(self.cfg.workers):
                self.fleet.call(i, "collect", per_call)
        got = self.fleet.next(timeout=1.0)
        if got is not None and got[1] is not None:
            i, result = got
            report_rollout(run, callback, result, self.fleet.generation[i])
            self.results.append(result)
            self.steps += len(result["returns"])

    def batch(self):
        """The round's pieces in worker order (arrival order must not change the sums), or None."""
        if self.fleet.pending or self.steps < self.batch_steps:
            return None
        batch = sorted(self.results, key=lambda b: b["worker"])
        self.results, self.steps = [], 0
        obs = np.concatenate([b["obs"] for b in batch]).astype(np.float32)  # (B, D)
        return obs, np.concatenate([b["actions"] for b in batch]), np.concatenate([b["returns"] for b in batch])

    def updated(self, learner):
        self.updates += 1
        if self.updates % BROADCAST_EVERY == 0:
            self.fleet.broadcast(learner.model.state_dict())

    def status(self):
        return {"version": self.fleet.version}

    def close(self):
        shut_down(self.ray, self.fleet, self.started)


# ----------------------------------------------------------------------------- training

def train(cfg, run, callback=None, init=None, resume=None):
    """Train until total_steps, hours, or a stop request. cfg: a resolved Config.

    init: (models, header) of a checkpoint to start the weights from; resume: the same for the run's
    own checkpoint (weights, optimizer, counters and random state). callback(metrics) is called
    after every finished episode and update (and with workers, every "rollout" and "worker_lost")."""
    rng = np.random.default_rng(cfg.seed)
    source = (RayActors if cfg.workers > 0 else LocalEnvs)(cfg, rng)
    run.env = source.spec  # what checkpoints record is the env this run really plays
    obs_shape, n_actions = source.obs_shape, source.n_actions
    learner = Learner(cfg, int(np.prod(obs_shape)), n_actions, rng)
    if init is not None:
        learner.model.load_state_dict(init[0]["model"].state_dict())
    if resume is not None:
        models, header, rest = resume
        learner.restore(models, header, rest)
        rng.bit_generator.state = header["rng"]
        run.restore(header)

    def save(final=False):
        info, opt_arrays = learner.opt.state_dict()
        header = {**checkpoint_header(cfg, obs_shape, n_actions, rng), "optim": info}
        return run.save({"model": learner.model}, header, {f"optim.{k}": v for k, v in opt_arrays.items()},
                        final=final)

    def player():  # the evaluations' and videos' games: sampled actions, as scripts.evaluate plays pg
        return PolicyAgent(learner.model, cfg.head, run.env, n_actions, seed=10_000_000 + cfg.seed)

    side = SideGames(run, player, cfg.eval_every, cfg.eval_episodes, 10_000_000 + 1000 * cfg.seed, cfg.sticky,
                     explore=True, callback=callback)
    stop_at = deadline(cfg.hours, run)
    learner.model.eval()
    try:
        source.start(run, learner, callback)
        while not finished(cfg, run, stop_at):
            if cfg.batch_schedule:
                source.batch_steps = batch_steps_at(run.step, cfg)
            source.collect(run, callback)
            batch = source.batch()
            if batch is not None:
                if cfg.lr_schedule:
                    learner.opt.lr = lr_at(run.step, cfg)
                metrics = learner.update(*batch)
                learner.model.eval()
                check_update(learner, metrics, run)
                source.updated(learner)
                run.log_update({**source.status(), **metrics, "lr": learner.opt.lr}, callback)
                side()
            if run.due():
                save()
        save(final=True)
    finally:
        source.close()
    return learner
