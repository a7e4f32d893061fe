"""REINFORCE from pixels: Karpathy's "Pong from Pixels" on the nets/ stack, with batched envs.

The policy is a two-layer MLP. On Karpathy's preset it is his 6400 -> 200 -> 1 with a sigmoid giving
P(down); elsewhere a softmax over the game's actions. Returns are discounted and restart whenever a
point is scored (reward != 0) in Pong-like games, advantages are standardized over each update
batch, and the gradient of  -advantage * log pi(action)  goes through nets' BCE / softmax
cross-entropy with per-sample weights.

Because returns restart at every point, a point is a complete piece of experience: an env's steps
join the update batch as soon as a point (or the episode) ends, so updates need not wait for
whole 21-point games.
"""
import dataclasses
import math
import time

import numpy as np

import envs
from agents.run import NumericalError
from nets import Adam, BCEWithLogits, Linear, ReLU, RMSProp, Sequential, SoftmaxCrossEntropy, softmax
from nets.layers import sigmoid


@dataclasses.dataclass
class Config:
    agent: str = "pg"  # which algorithm (fixed)
    game: str = "pong"  # short name or env id
    preset: str = ""  # karpathy / deepmind / classic; empty: the game's default (Pong: karpathy)
    sticky: bool = True  # ALE v5 sticky actions (0.25); False: the NoFrameskip-v4 protocol
    seed: int = 0  # seeds the network, the action sampling and the envs
    total_steps: int = 0  # stop after this many agent steps (0: no limit)
    hours: float = 0.0  # stop after this many hours of wall clock (0: no limit)
    num_envs: int = 8  # envs stepped together with one batched forward pass
    hidden: int = 200  # hidden units (Karpathy: 200)
    head: str = "auto"  # sigmoid (two actions, Karpathy) or softmax; auto: sigmoid on karpathy preset
    optimizer: str = "rmsprop"  # rmsprop (Karpathy) or adam
    lr: float = 1e-3  # learning rate (own runs; Karpathy used 1e-4 with 10-episode batches)
    rmsprop_decay: float = 0.99  # RMSProp decay (Karpathy: 0.99)
    gamma: float = 0.99  # discount (Karpathy: 0.99)
    batch_steps: int = 8000  # update once this many steps of finished points/episodes are in hand
    reset_on_reward: str = "auto"  # restart returns at each point: yes / no / auto (yes on Atari)
    max_grad_norm: float = 0.0  # clip the gradient's global norm (0: off)
    max_bad_updates: int = 5  # stop after this many NaN/inf updates in a row
    checkpoint_minutes: float = 5.0  # write checkpoint.npz this often
    keep_snapshots: int = 0  # also keep the playing weights of the last K saves in snapshots/ (ship --average)
    workers: int = 0  # Ray actors stepping the envs (agents/distributed.py); 0: all in this process
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
        raise ValueError(f"head must be sigmoid/softmax/auto and reset_on_reward yes/no/auto, got {cfg.head!r}, {cfg.reset_on_reward!r}")
    if cfg.optimizer not in ("rmsprop", "adam"):
        raise ValueError(f"optimizer must be rmsprop or adam, got {cfg.optimizer!r}")
    for name in ("num_envs", "hidden", "batch_steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.keep_snapshots < 0:
        raise ValueError(f"keep_snapshots must be >= 0, got {cfg.keep_snapshots}")
    return dataclasses.replace(cfg, preset=preset, head=head, reset_on_reward=reset)


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
            from nets import clip_grad_norm
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


def train(cfg, run, callback=None, init=None, resume=None):
    """Train until total_steps, hours, or a stop request. cfg: a resolved Config.

    init: (models, header) of a checkpoint to start the weights from; resume: the same for the run's
    own checkpoint (weights, optimizer, counters and random state). callback(metrics) is called
    after every finished episode and update."""
    if cfg.workers > 0:
        from agents.distributed import train_pg
        return train_pg(cfg, run, callback, init, resume)
    rng = np.random.default_rng(cfg.seed)
    venv = envs.make_vector(cfg.game, cfg.preset, cfg.num_envs, sticky=cfg.sticky)
    run.env = venv.grok_spec  # what checkpoints record is the env this run really plays
    obs_shape = venv.single_observation_space.shape
    n_actions = int(venv.single_action_space.n)
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
        extra = {f"optim.{k}": v for k, v in opt_arrays.items()}
        header = {**checkpoint_header(cfg, obs_shape, n_actions, rng), "optim": info}
        return run.save({"model": learner.model}, header, extra, final=final)

    store = np.int8 if cfg.preset == "karpathy" else np.float32  # Karpathy diffs are -1/0/1
    rollouts = Rollouts(cfg.num_envs, store)
    reset_on_reward = cfg.reset_on_reward == "yes"
    # envs are re-seeded from (seed, step) so a resumed run does not replay the same games
    obs, _ = venv.reset(seed=int(cfg.seed * 1_000_003 + run.step) % (2**31))
    ep_return = np.zeros(cfg.num_envs)
    ep_length = np.zeros(cfg.num_envs, dtype=np.int64)
    deadline = time.monotonic() + cfg.hours * 3600 if cfg.hours > 0 else math.inf
    learner.model.eval()
    try:
        while not run.stop_requested:
            if cfg.total_steps and run.step >= cfg.total_steps or time.monotonic() >= deadline:
                break
            probs = action_probs(learner.model, obs, cfg.head)  # (N, A)
            actions = sample_actions(probs, rng)
            next_obs, rewards, terminated, truncated, _ = venv.step(actions)
            done = terminated | truncated
            run.step += cfg.num_envs
            ep_return += rewards
            ep_length += 1
            for i in range(cfg.num_envs):
                rollouts.add(i, obs[i], actions[i], float(rewards[i]))
                if done[i] or (reset_on_reward and rewards[i] != 0):
                    rollouts.finish(i, cfg.gamma, reset_on_reward)
                if done[i]:
                    mean = run.log_episode(ep_return[i], ep_length[i])
                    if callback:
                        callback({"event": "episode", "step": run.step, "episode": run.episode,
                                  "return": float(ep_return[i]), "length": int(ep_length[i]),
                                  "running_mean": mean})
                    ep_return[i], ep_length[i] = 0.0, 0
            obs = next_obs
            if rollouts.batch_steps >= cfg.batch_steps:
                metrics = learner.update(*rollouts.take())
                learner.model.eval()
                if metrics["skipped"]:
                    run.message(f"update at step {run.step} produced NaN/inf: skipped "
                                f"({learner.bad_in_a_row} in a row, {learner.bad_total} in all)")
                    if learner.bad_in_a_row >= cfg.max_bad_updates:
                        raise NumericalError(
                            f"{learner.bad_in_a_row} updates in a row produced NaN/inf; stopped without "
                            f"overwriting {run.checkpoint_path}")
                run.log_update(metrics, callback)
            if run.due():
                save()
        save(final=True)
    finally:
        venv.close()
    return learner
