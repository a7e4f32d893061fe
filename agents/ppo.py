"""PPO (Schulman et al. 2017) on the nets/ stack: CleanRL's ppo_atari, one readable file.

One network with a shared torso ends in a Linear whose first A outputs are the policy's logits and
whose last output is the value estimate (the two heads of CleanRL's Agent, in one matrix). Each
round the vector env plays num_steps steps; GAE(lambda) turns rewards and values into advantages;
then `epochs` passes of shuffled minibatches minimize the clipped surrogate, the (clipped) value
loss and minus the entropy bonus, with advantages normalized per minibatch, the gradient's global
norm clipped and the learning rate annealed linearly to 0 over the run's total_steps.

Atari runs full games on the deepmind preset (ale-py's AtariVectorEnv), with DeepMind's episodic
life done here as in agents/dqn.py: a lost life ends the learner's episode (no bootstrap, no
advantage across it) while the game goes on, so progress.csv holds whole-game scores. Rewards are
clipped to [-1, 1] for learning (CleanRL's ClipRewardEnv); a time-limit truncation bootstraps from
the value of the episode's real last observation (info["final_obs"]).

The envs play in this process (Players) or, with workers, on Ray actors (RayPlayers): each actor
plays the round on its own envs with the newest weights and the learner puts the rollouts side by
side before GAE and the update, as if one vector env of workers x num_envs had played it.
"""
import dataclasses
import math
import time

import numpy as np

import envs
from agents.distributed import Fleet, lost_reporter, report_rollout, shut_down, start_ray, worker_seed
from agents.evaluation import SideGames
from agents.run import NumericalError, Stopwatch, deadline, finished
from nets import Adam, Conv2d, Flatten, Linear, Parallel, ReLU, Sequential, Tanh, log_softmax, softmax
from nets.init import orthogonal_init

__all__ = ["Config", "resolved", "train", "PPOAgent", "NumericalError"]
# the values a setting may take (its flag's choices; resolved() refuses any other)
CHOICES = {"preset": ("deepmind", "classic"), "network": ("auto", "nature", "small", "mlp")}


@dataclasses.dataclass
class Config:
    agent: str = "ppo"  # which algorithm (fixed)
    game: str = "pong"  # short name or env id; an Atari id names its protocol: PongNoFrameskip-v4 no sticky
    # actions, ALE/Pong-v5 sticky ones (--list-games lists them)
    preset: str = ""  # deepmind (Atari) or classic (CartPole-v1, ...); empty: by game
    sticky: bool = True  # ALE v5 sticky actions (0.25), the default protocol; False: NoFrameskip-v4
    seed: int = 0  # seeds the network, action sampling, minibatch order and the envs
    total_steps: int = 5_000_000  # stop after this many agent steps; the learning rate anneals to 0 over them (0: no limit).
    # Pong, sticky, seed 0, 30 fresh games: Nature's torso, 5M (2.93 h here) +18.07 sticky, +20.97 without; the
    # small torso, 6.5M (2.00 h) +15.70 and +20.70, 8.5M (2.34 h) +16.43 and +20.40: it flattens near +16
    hours: float = 0.0  # stop after this many hours of wall clock in all, a resumed run's included (0: no limit)
    num_envs: int = 8  # envs stepped together (CleanRL ppo_atari: 8; ppo on CartPole: 4)
    num_steps: int = 128  # steps per env in each rollout (CleanRL: 128)
    network: str = "auto"  # nature (Nature DQN's torso), small (Mnih et al. 2013's: conv 16 8x8/4, conv 32
    # 4x4/2, 256) or mlp (classic tasks); auto: nature on Atari, mlp on classic. Pong, sticky, seed 0: small
    # makes ~900 steps/s here against nature's ~480 and beats the AI first (running mean 0 at 19.8 min against
    # 24), but nature learns more per step and goes on past small's +16 (running mean +17.72 at 2.93 h)
    hidden: int = 0  # units of the last hidden layer; 0: 512 nature, 256 small, 64 mlp (CleanRL)
    lr: float = 2.5e-4  # Adam's learning rate at step 0 (CleanRL: 2.5e-4)
    anneal_lr: bool = True  # anneal the learning rate linearly to 0 over total_steps (CleanRL)
    adam_eps: float = 1e-5  # Adam's epsilon (CleanRL, from OpenAI baselines)
    gamma: float = 0.99  # discount (CleanRL)
    gae_lambda: float = 0.95  # GAE's lambda (CleanRL)
    epochs: int = 3  # passes over each rollout (CleanRL: 4; here 3, as ChainerRL's Atari PPO: see minibatches)
    minibatches: int = 32  # minibatches per pass: 8 envs x 128 steps -> 32 a minibatch, as ChainerRL's Atari PPO
    # (CleanRL: 4 of 256). Pong, sticky, seed 1, running mean of 100 games: -18.9 at 229k steps against
    # CleanRL's -20.3; at 600k -11.8, and -11.9 with 16 minibatches of 4 epochs, for a third more compute
    clip: float = 0.1  # surrogate clipping epsilon (CleanRL ppo_atari: 0.1; ppo on CartPole: 0.2)
    clip_vloss: bool = False  # clip the value update around the rollout's values as well (CleanRL: on). Off here:
    # Pong, sticky, seed 1: the running mean of 100 games reached -10 at 586k steps, against 687k with it
    ent_coef: float = 0.01  # entropy bonus (CleanRL: 0.01)
    anneal_ent: bool = True  # anneal the entropy bonus linearly to 0 over total_steps, as the learning rate
    # (CleanRL keeps it at 0.01). Pong, sticky, seed 0, 6.5M steps, 30 fresh games each: +15.70 sticky and
    # +20.70 without, against +14.83 and +19.30 keeping it; running mean of 100 games at the end +15.70
    # against +14.45; the policy's entropy 0.79 nats over the last 50 rounds against ~1.05
    vf_coef: float = 0.5  # value loss weight (CleanRL: 0.5)
    max_grad_norm: float = 0.5  # clip the gradient's global norm (CleanRL: 0.5)
    norm_adv: bool = True  # normalize advantages in each minibatch (CleanRL)
    target_kl: float = 0.0  # stop a round's epochs early once the approximate KL passes this (0: never; CleanRL: off)
    life_loss_terminal: bool = True  # a lost life ends the learner's episode; the game goes on (CleanRL's EpisodicLife)
    eval_every: int = 500_000  # agent steps between evaluations on whole games into eval.csv (0: never)
    eval_episodes: int = 5  # games per evaluation
    max_bad_updates: int = 5  # stop after this many NaN/inf minibatch updates in a row
    checkpoint_minutes: float = 5.0  # write checkpoint.npz this often (at the end of a round)
    keep_snapshots: int = 0  # also keep the playing weights of the last K saves in snapshots/ (ship --average)
    workers: int = 0  # Ray actors playing the rounds, num_envs envs each (RayPlayers below); 0: all in this process
    ray_address: str = ""  # with workers: join this Ray cluster


# Where a round's time goes (metrics.csv's seconds_*, and scripts.bench ppo's rows): the rollout's
# network forward and sampling (act), the envs (env), the rollout's bookkeeping, GAE and the update's
# shuffling (other), then the minibatches' forward (their gathering and the loss included), backward
# and optimizer (gradient norm, clipping and Adam).
PARTS = ("act", "env", "other", "forward", "backward", "optimizer")


def envs_per_round(cfg):
    """The envs side by side in a round: num_envs, on each actor with workers."""
    return cfg.num_envs * max(cfg.workers, 1)


def resolved(cfg):
    """Config with derived values filled in (preset, network, hidden); ValueError on bad values."""
    env_id = envs.resolve(cfg.game)
    preset = cfg.preset or ("deepmind" if envs.atari.is_atari(env_id) else "classic")
    if preset not in CHOICES["preset"]:
        raise ValueError(f"ppo needs the deepmind preset on Atari or classic on control tasks, got {preset!r}")
    envs.env_spec(env_id, preset, cfg.sticky)  # raises on a preset that does not fit the game
    network = cfg.network if cfg.network != "auto" else ("nature" if preset == "deepmind" else "mlp")
    if network not in ("nature", "small", "mlp") or (network == "mlp") != (preset == "classic"):
        raise ValueError(f"network must be auto, nature or small (deepmind preset) or mlp (classic); "
                         f"{cfg.network!r} does not fit {env_id} on the {preset} preset")
    hidden = cfg.hidden or {"nature": 512, "small": 256, "mlp": 64}[network]
    for name in ("num_envs", "num_steps", "epochs", "minibatches", "eval_episodes", "max_bad_updates"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("seed", "total_steps", "hours", "eval_every", "keep_snapshots", "ent_coef", "vf_coef", "max_grad_norm",
                 "target_kl", "checkpoint_minutes"):
        if not getattr(cfg, name) >= 0 or not math.isfinite(getattr(cfg, name)):
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    envs_in_all = envs_per_round(cfg)
    if (envs_in_all * cfg.num_steps) % cfg.minibatches:
        raise ValueError(f"num_envs x num_steps{' x workers' if cfg.workers else ''} ({envs_in_all * cfg.num_steps}) "
                         f"must split into {cfg.minibatches} equal minibatches")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    if not cfg.lr > 0 or not math.isfinite(cfg.lr):
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if not 0.0 < cfg.clip < 1.0:
        raise ValueError(f"clip must be in (0, 1), got {cfg.clip}")
    if not cfg.adam_eps > 0 or not math.isfinite(cfg.adam_eps):
        raise ValueError(f"adam_eps must be > 0, got {cfg.adam_eps}")
    if cfg.workers < 0:
        raise ValueError(f"workers must be >= 0, got {cfg.workers}")
    return dataclasses.replace(cfg, preset=preset, network=network, hidden=hidden)


# ----------------------------------------------------------------------------- the network

def build_network(obs_shape, n_actions, network, hidden, rng):
    """(N, *obs) -> (N, n_actions + 1): the logits, then the value. On Atari a shared conv torso ends
    in one Linear holding both heads; on classic tasks an actor and a critic MLP run side by side
    (CleanRL's ppo.py: sharing a small torso, the value loss swamped the policy's gradient on
    CartPole here). Orthogonal init as CleanRL's layer_init: gain sqrt(2) in the torsos, 0.01 on
    the policy's outputs (a near-uniform first policy), 1 on the value's."""
    if network == "mlp":  # CleanRL's ppo.py: separate actor and critic towers, side by side
        features = int(np.prod(obs_shape))
        towers = []
        for out, gain in ((n_actions, 0.01), (1, 1.0)):
            layers = [Linear(features, hidden, input_grad=False, rng=rng), Tanh(), Linear(hidden, hidden, rng=rng),
                      Tanh(), Linear(hidden, out, rng=rng)]
            for layer, g in zip(layers[::2], (math.sqrt(2.0), math.sqrt(2.0), gain)):
                orthogonal_init(layer, g, rng=rng)
            towers.append(Sequential(*layers))
        return Sequential(Parallel(*towers))
    c, h, w = obs_shape
    convs = ((32, 8, 4), (64, 4, 2), (64, 3, 1)) if network == "nature" else ((16, 8, 4), (32, 4, 2))
    torso = []
    for i, (out, k, s) in enumerate(convs):
        torso += [Conv2d(c, out, k, stride=s, input_grad=i > 0, rng=rng), ReLU()]  # no dx for the data
        c, h, w = out, (h - k) // s + 1, (w - k) // s + 1
    torso += [Flatten(), Linear(c * h * w, hidden, rng=rng), ReLU()]
    for layer in torso:
        if "W" in layer.params:
            orthogonal_init(layer, math.sqrt(2.0), rng=rng)
    head = Linear(hidden, n_actions + 1, rng=rng)
    orthogonal_init(head, 1.0, rng=rng)
    head.params["W"][:, :n_actions] *= 0.01  # the policy's columns: CleanRL's std 0.01
    return Sequential(*torso, head)


def network_input(obs, obs_scale):
    """(N, *obs) in the env's dtype -> float32; uint8 frames are scaled by 1/255 here."""
    return np.multiply(obs, np.float32(obs_scale), dtype=np.float32)


def policy_and_value(model, obs, obs_scale):
    """(N, *obs) -> logits (N, A), values (N,)."""
    out = model.forward(network_input(obs, obs_scale))  # (N, A+1)
    return out[:, :-1], out[:, -1]


def sample_actions(logits, rng):
    """One action per row by the Gumbel-max trick: argmax(logits + Gumbel noise) ~ softmax(logits)."""
    u = rng.random(logits.shape, dtype=np.float32)  # (N, A)
    return np.argmax(logits - np.log(-np.log(u + 1e-20) + 1e-20), axis=1)


# ----------------------------------------------------------------------------- GAE and the loss

def gae(rewards, values, next_values, terminal, boundary, gamma, lam):
    """Generalized advantage estimation (Schulman et al. 2016) over a (T, N) rollout.

    next_values[t]: the value of the observation after step t in the same episode (the episode's
    last observation on a truncation); terminal[t]: step t ended the learner's episode for good (no
    bootstrap); boundary[t]: an episode ended at step t for any reason (terminal, truncated), so no
    advantage flows back across it. Returns (advantages, returns), each (T, N) float32."""
    T = len(rewards)
    adv = np.zeros_like(values, dtype=np.float32)
    running = np.zeros(values.shape[1:], np.float32)
    for t in range(T - 1, -1, -1):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminal[t]) - values[t]  # (N,)
        running = delta + gamma * lam * (1.0 - boundary[t]) * running
        adv[t] = running
    return adv, (adv + values).astype(np.float32)


def ppo_loss(out, actions, old_logp, adv, returns, old_values, cfg):
    """The clipped PPO objective on one minibatch; returns (loss, dloss/dout (B, A+1), stats).

    out: (B, A+1) network outputs (logits, value). loss = policy loss - ent_coef * entropy
    + vf_coef * value loss, each a mean over the minibatch (CleanRL's ppo_atari)."""
    B = len(actions)
    rows = np.arange(B)
    logits, v = out[:, :-1], out[:, -1]  # (B, A), (B,)
    logp_all = log_softmax(logits)  # (B, A)
    p = np.exp(logp_all)  # (B, A)
    logp = logp_all[rows, actions]  # (B,)
    log_ratio = logp - old_logp
    ratio = np.exp(log_ratio)  # (B,)
    if cfg.norm_adv and B > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    surr1 = ratio * adv
    surr2 = np.clip(ratio, 1.0 - cfg.clip, 1.0 + cfg.clip) * adv
    pg_loss = -np.mean(np.minimum(surr1, surr2))
    # d pg_loss / d logp: through the unclipped term wherever it is the smaller one
    dlogp = np.where(surr1 <= surr2, -adv * ratio, 0.0) / B  # (B,)
    dlogits = -p * dlogp[:, None]  # d logp[a] / d logits = onehot(a) - p
    dlogits[rows, actions] += dlogp
    entropy = -np.sum(p * logp_all, axis=1)  # (B,)
    # d entropy / d logits_j = -p_j (logp_j + entropy); the bonus enters the loss as -ent_coef * mean
    dlogits += cfg.ent_coef / B * p * (logp_all + entropy[:, None])
    if cfg.clip_vloss:
        v_clipped = old_values + np.clip(v - old_values, -cfg.clip, cfg.clip)
        loss_unclipped, loss_clipped = (v - returns) ** 2, (v_clipped - returns) ** 2
        use_unclipped = loss_unclipped >= loss_clipped
        v_loss = 0.5 * np.mean(np.maximum(loss_unclipped, loss_clipped))
        inside = np.abs(v - old_values) < cfg.clip  # where the clipped value still moves with v
        dv = np.where(use_unclipped, v - returns, np.where(inside, v_clipped - returns, 0.0)) / B
    else:
        v_loss = 0.5 * np.mean((v - returns) ** 2)
        dv = (v - returns) / B
    loss = pg_loss - cfg.ent_coef * float(np.mean(entropy)) + cfg.vf_coef * v_loss
    dout = np.empty_like(out)
    dout[:, :-1] = dlogits
    dout[:, -1] = cfg.vf_coef * dv
    stats = {"policy_loss": float(pg_loss), "value_loss": float(v_loss), "entropy": float(np.mean(entropy)),
             "approx_kl": float(np.mean((ratio - 1.0) - log_ratio)),  # Schulman's low-variance estimator
             "clipfrac": float(np.mean(np.abs(ratio - 1.0) > cfg.clip))}
    return float(loss), dout.astype(out.dtype, copy=False), stats


# ----------------------------------------------------------------------------- acting

class PPOAgent:
    """A trained policy that acts: act(obs, explore) -> (actions (N,), probabilities (N, A)).

    explore=True samples from the policy (as in training, and rl_zoo3's default on Atari);
    explore=False takes the most likely action. `values` holds the last call's value estimates."""

    kind = "ppo"

    def __init__(self, model, env, n_actions, obs_scale, seed=0, rng=None):
        self.model = model
        self.env = env
        self.n_actions = int(n_actions)
        self.obs_scale = float(obs_scale)
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.values = None

    @classmethod
    def from_checkpoint(cls, models, header, seed=0):
        return cls(models["model"].eval(), header["env"], int(header["n_actions"]), float(header["obs_scale"]),
                   seed=seed)

    def act(self, obs, explore=True):
        logits, self.values = policy_and_value(self.model, obs, self.obs_scale)
        actions = sample_actions(logits, self.rng) if explore else logits.argmax(axis=1)
        return actions, softmax(logits)


# ----------------------------------------------------------------------------- learning

class Rollout:
    """One round of experience, (T, N) per field; obs kept in the env's dtype (uint8 frames)."""

    def __init__(self, T, N, obs_shape, obs_dtype):
        self.obs = np.zeros((T, N, *obs_shape), obs_dtype)
        self.actions = np.zeros((T, N), np.int64)
        self.logp = np.zeros((T, N), np.float32)
        self.values = np.zeros((T, N), np.float32)
        self.rewards = np.zeros((T, N), np.float32)
        self.terminal = np.zeros((T, N), np.float32)  # no bootstrap: game over or a lost life
        self.boundary = np.zeros((T, N), np.float32)  # any episode end, truncation included
        self.next_values = np.zeros((T, N), np.float32)  # filled in by finish()
        self.truncated_values = {}  # (t, i) -> value of the truncated episode's last observation

    def finish(self, last_values):
        """next_values from the values of the following steps, and the truncated episodes' own."""
        self.next_values[:-1] = self.values[1:]
        self.next_values[-1] = last_values
        for (t, i), v in self.truncated_values.items():
            self.next_values[t, i] = v
        self.truncated_values = {}


class Learner:
    """The network, Adam, and the PPO update over a rollout."""

    def __init__(self, cfg, obs_shape, n_actions, obs_scale, rng):
        self.cfg = cfg
        self.obs_scale = obs_scale
        self.n_actions = n_actions
        self.model = build_network(obs_shape, n_actions, cfg.network, cfg.hidden, rng)
        self.opt = Adam(self.model, lr=cfg.lr, eps=cfg.adam_eps)
        self.updates = 0  # rounds of epochs done
        self.bad_in_a_row = 0
        self.bad_total = 0

    def annealed(self, value, on, step):
        """value, annealed linearly to 0 over total_steps when on; step: the agent steps before this
        round's rollout, so the first round uses value (CleanRL's frac = 1 - (update - 1) / num_updates)."""
        if not on or not self.cfg.total_steps:
            return value
        return value * max(1.0 - step / self.cfg.total_steps, 0.0)

    def lr_at(self, step):
        return self.annealed(self.cfg.lr, self.cfg.anneal_lr, step)

    def minibatch_step(self, obs, actions, logp, adv, returns, values, clock):
        """One gradient step; returns stats, or None when the loss or gradient was NaN/inf (skipped).
        clock: a Stopwatch charged with forward (the loss's too), backward and optimizer."""
        out = self.model.train().forward(network_input(obs, self.obs_scale))  # (B, A+1)
        loss, dout, stats = ppo_loss(out, actions, logp, adv, returns, values, self.loss_cfg)
        clock.mark("forward")
        self.model.backward(dout)
        clock.mark("backward")
        grads = [g for _, _, g in self.model.parameters()]
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self.bad_in_a_row += 1
            self.bad_total += 1
            clock.mark("optimizer")
            return None
        if 0 < self.cfg.max_grad_norm < norm:  # nets.clip_grad_norm, without computing the norm twice
            for g in grads:
                g *= self.cfg.max_grad_norm / (norm + 1e-6)
        self.opt.step()
        clock.mark("optimizer")
        self.bad_in_a_row = 0
        return {**stats, "loss": loss, "grad_norm": norm}

    def update(self, ro, adv, returns, rng, step, on_bad, clock=None):
        """epochs passes of shuffled minibatches over the rollout; returns the mean stats. clock: a
        Stopwatch charged with forward (the minibatch's gathering too), backward and optimizer."""
        cfg = self.cfg
        self.opt.lr = self.lr_at(step)
        self.loss_cfg = dataclasses.replace(cfg, ent_coef=self.annealed(cfg.ent_coef, cfg.anneal_ent, step))
        n = ro.actions.size
        obs = ro.obs.reshape(n, *ro.obs.shape[2:])  # (T*N, ...)
        flat = [a.reshape(n) for a in (ro.actions, ro.logp, adv, returns, ro.values)]
        size = n // cfg.minibatches
        totals, count, epochs_done = {}, 0, 0
        clock = clock or Stopwatch()
        clock.mark("other")
        for _ in range(cfg.epochs):
            order = rng.permutation(n)
            kls = []
            for start in range(0, n, size):
                idx = order[start:start + size]
                stats = self.minibatch_step(obs[idx], *(a[idx] for a in flat), clock=clock)
                if stats is None:
                    on_bad(self)
                    continue
                kls.append(stats["approx_kl"])
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + v
                count += 1
            epochs_done += 1
            if cfg.target_kl and kls and np.mean(kls) > cfg.target_kl:
                break
        self.model.eval()
        self.updates += 1
        clock.mark("other")
        metrics = {k: v / max(count, 1) for k, v in totals.items()}
        var = float(np.var(flat[3]))
        metrics["explained_variance"] = float("nan") if var == 0 else 1.0 - float(np.var(flat[3] - flat[4])) / var
        metrics.update(lr=self.opt.lr, ent_coef=self.loss_cfg.ent_coef, epochs=epochs_done, updates=self.updates)
        return metrics

    def restore(self, models, header, rest):
        self.model.load_state_dict(models["model"].state_dict())
        self.opt.load_state_dict(header.get("optim", {"t": 0}),
                                 {k[6:]: v for k, v in rest.items() if k.startswith("optim.")})
        self.updates = int(header.get("updates", 0))

    def checkpoint(self):
        info, opt_arrays = self.opt.state_dict()
        return ({"model": self.model}, {"updates": self.updates, "optim": info},
                {f"optim.{k}": v for k, v in opt_arrays.items()})


# ----------------------------------------------------------------------------- training

# ----------------------------------------------------------------------------- experience sources

class Players:
    """num_envs envs in this process with their games in progress, played a round at a time."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.venv = envs.make_vector(cfg.game, cfg.preset, cfg.num_envs, sticky=cfg.sticky, training=False)
        self.spec = self.venv.grok_spec
        space = self.venv.single_observation_space
        self.obs_shape, self.obs_dtype = space.shape, space.dtype
        self.n_actions = int(self.venv.single_action_space.n)
        self.obs_scale = 1.0 / 255.0 if space.dtype == np.uint8 else 1.0
        self.clip = cfg.preset == "deepmind"  # CleanRL clips Atari rewards to [-1, 1]; classic tasks keep theirs
        self.obs, self.lives = None, None
        self.game_return, self.game_length = np.zeros(cfg.num_envs), np.zeros(cfg.num_envs, np.int64)

    def start(self, seed):
        self.obs, info = self.venv.reset(seed=seed)
        self.lives = info.get("lives") if self.cfg.life_loss_terminal else None

    def play(self, model, ro, rng, clock, count):
        """num_steps steps of every env, actions sampled from model's policy with rng, into ro (then
        ro.finish); count(n, games) after every step with the (return, length) of the games that ended
        on it. clock: a Stopwatch charged with act, env and other. Returns True: the round is whole."""
        T, N, obs_scale = self.cfg.num_steps, self.cfg.num_envs, self.obs_scale
        obs = self.obs
        for t in range(T):
            logits, values = policy_and_value(model, obs, obs_scale)  # (N, A), (N,)
            actions = sample_actions(logits, rng)
            ro.obs[t] = obs
            ro.actions[t], ro.values[t] = actions, values
            ro.logp[t] = log_softmax(logits)[np.arange(N), actions]
            clock.mark("act")
            obs, rewards, terminated, truncated, info = self.venv.step(actions)
            clock.mark("env")
            ended = terminated | truncated
            terminal = terminated.copy()
            if self.lives is not None and "lives" in info:
                terminal |= (info["lives"] < self.lives) & ~ended  # a lost life: the game goes on
                self.lives = info["lives"]
            ro.rewards[t] = np.sign(rewards) if self.clip else rewards
            ro.terminal[t], ro.boundary[t] = terminal, terminal | ended
            for i in np.flatnonzero(truncated & ~terminated):  # bootstrap from the real last observation
                _, v = policy_and_value(model, info["final_obs"][i][None], obs_scale)
                ro.truncated_values[(t, i)] = float(v[0])
            self.game_return += rewards
            self.game_length += 1
            count(N, [(float(self.game_return[i]), int(self.game_length[i])) for i in np.flatnonzero(ended)])
            self.game_return[ended], self.game_length[ended] = 0.0, 0
            clock.mark("other")
        self.obs = obs
        _, last_values = policy_and_value(model, obs, obs_scale)
        clock.mark("act")
        ro.finish(last_values)
        return True

    def saved_state(self):
        """(header fields, arrays) that let a resumed run go on mid-episode, or None where the envs
        cannot be saved (ale-py's AtariVectorEnv keeps its emulators in C++)."""
        env_state = envs.atari.vector_state(self.venv)
        if env_state is None:
            return None
        return {"env_state": env_state}, {"envstate.obs": np.asarray(self.obs), "envstate.game_return": self.game_return,
                                          "envstate.game_length": self.game_length}

    def restore(self, header, rest):
        """Go on from a saved_state(); ValueError (or KeyError, TypeError) when it does not fit."""
        envs.atari.restore_vector_state(self.venv, header["env_state"])
        self.obs = rest["envstate.obs"].astype(self.obs.dtype)
        self.game_return[:] = rest["envstate.game_return"]
        self.game_length[:] = rest["envstate.game_length"]

    def close(self):
        self.venv.close()


ROLLOUT_FIELDS = ("obs", "actions", "logp", "values", "rewards", "terminal", "boundary", "next_values")


class PPOWorker:
    """A Ray actor (agents/distributed.py starts it): num_envs envs (Players) and a copy of the
    network; play() returns one round played with the weights set last."""

    def __init__(self, cfg, index, seed):
        self.cfg, self.index = Config(**cfg), index
        self.rng = np.random.default_rng(seed)
        self.players = Players(self.cfg)
        self.players.start(seed % (2**31))
        p = self.players
        self.model = build_network(p.obs_shape, p.n_actions, self.cfg.network, self.cfg.hidden, self.rng).eval()
        self.ro = Rollout(self.cfg.num_steps, self.cfg.num_envs, p.obs_shape, p.obs_dtype)
        self.version = -1

    def set_weights(self, version, weights):
        self.model.load_state_dict(weights)
        self.version = version

    def play(self):
        games = []
        self.players.play(self.model, self.ro, self.rng, Stopwatch(), lambda n, ended: games.extend(ended))
        return {"worker": self.index, "version": self.version, "steps": self.ro.actions.size, "episodes": games,
                **{name: getattr(self.ro, name) for name in ROLLOUT_FIELDS}}

    def close(self):
        self.players.close()


class RayPlayers:
    """Players on `workers` PPOWorker actors, num_envs envs each: every round the newest weights go
    to all of them and each plays num_steps steps; their rollouts side by side, in worker order, are
    the round's (T, workers x num_envs). PPO learns on-policy, so a round waits for its slowest actor;
    an actor lost mid-round is replaced and plays the round again."""

    def __init__(self, cfg, run, callback):
        self.cfg, self.run, self.callback = cfg, run, callback
        probe = Players(dataclasses.replace(cfg, num_envs=1))
        self.spec, self.obs_shape, self.obs_dtype = probe.spec, probe.obs_shape, probe.obs_dtype
        self.n_actions, self.obs_scale = probe.n_actions, probe.obs_scale
        probe.close()
        self.ray, self.started, self.fleet = None, False, None

    def start(self, seed):
        cfg = self.cfg
        self.ray, self.started = start_ray(cfg.ray_address, cfg.workers)
        config = dataclasses.asdict(cfg)
        self.fleet = Fleet(self.ray, PPOWorker, lambda i, g: (config, i, worker_seed(seed, i, g)), cfg.workers,
                           lost_reporter(self.run, self.callback))

    def play(self, model, ro, rng, clock, count):
        """As Players.play, the actors' rounds in ro's columns (the waiting charged to env); False when
        a stop was asked for before every actor had answered (the round is dropped, nothing counted)."""
        fleet, n = self.fleet, self.cfg.num_envs
        fleet.broadcast(model.state_dict())
        for i in range(self.cfg.workers):
            fleet.call(i, "play")
        results = {}
        while len(results) < self.cfg.workers:
            if self.run.stop_requested:
                return False
            got = fleet.next(timeout=1.0)
            if got is not None:
                i, result = got
                if result is None:  # lost and replaced (with the current weights): play the round again
                    fleet.call(i, "play")
                else:
                    results[i] = result
        clock.mark("env")
        for i in sorted(results):  # worker order: arrival order must not change the round
            for name in ROLLOUT_FIELDS:
                getattr(ro, name)[:, i * n:(i + 1) * n] = results[i][name]
            report_rollout(self.run, self.callback, results[i], fleet.generation[i])
        clock.mark("other")
        return True

    def saved_state(self):
        return None  # the actors' envs stay where they are: a resumed run starts new games

    def close(self):
        shut_down(self.ray, self.fleet, self.started)


# ----------------------------------------------------------------------------- training

def train(cfg, run, callback=None, init=None, resume=None):
    """Train until total_steps, hours, or a stop request. cfg: a resolved Config.

    init: (models, header) of a checkpoint to start the weights from; resume: the same for the run's
    own checkpoint (weights, optimizer, counters and random state). callback(metrics) gets "episode"
    events after every finished game, "update" after every round and "eval" after evaluations (and
    with workers, "rollout" for every actor's round and "worker_lost")."""
    rng = np.random.default_rng(cfg.seed)
    players = RayPlayers(cfg, run, callback) if cfg.workers > 0 else Players(cfg)
    run.env = players.spec  # what checkpoints record is the env this run really plays
    obs_shape, n_actions, obs_scale = players.obs_shape, players.n_actions, players.obs_scale
    learner = Learner(cfg, obs_shape, n_actions, obs_scale, rng)
    if init is not None:
        learner.model.load_state_dict(init[0]["model"].state_dict())
    if resume is not None:
        models, header, rest = resume
        learner.restore(models, header, rest)
        rng.bit_generator.state = header["rng"]
        run.restore(header)
    player = lambda: PPOAgent(learner.model, run.env, n_actions, obs_scale, seed=10_000_000 + cfg.seed)  # noqa: E731
    side = SideGames(run, player, cfg.eval_every, cfg.eval_episodes, 10_000_000 + 1000 * cfg.seed, cfg.sticky,
                     explore=True, callback=callback)

    def save(final=False):
        """At the end of a round. Envs that can be saved mid-episode (classic control) are, with the
        observation in hand and the games' running scores: a resumed run then goes on bit-exactly."""
        models, fields, extra = learner.checkpoint()
        header = {"agent": "ppo", "obs_shape": list(obs_shape), "n_actions": n_actions, "obs_scale": obs_scale,
                  "rng": rng.bit_generator.state, **fields}
        saved = players.saved_state()
        if saved is not None:
            header.update(saved[0])
            extra.update(saved[1])
        return run.save(models, header, extra, final=final)

    def on_bad(lrn):
        run.message(f"update at step {run.step} produced NaN/inf: skipped "
                    f"({lrn.bad_in_a_row} in a row, {lrn.bad_total} in all)")
        if lrn.bad_in_a_row >= cfg.max_bad_updates:
            raise NumericalError(f"{lrn.bad_in_a_row} updates in a row produced NaN/inf; stopped without "
                                 f"overwriting {run.checkpoint_path}")

    T, N = cfg.num_steps, envs_per_round(cfg)
    ro = Rollout(T, N, obs_shape, players.obs_dtype)
    count = lambda n, games: run.count(n, games, callback)  # noqa: E731
    try:
        # envs are re-seeded from (seed, step) so a resumed run does not replay the same games
        players.start(int(cfg.seed * 1_000_003 + run.step) % (2**31))
        if resume is not None and "env_state" in resume[1]:  # the envs go on from where they were saved
            try:
                players.restore(resume[1], resume[2])
            except (KeyError, TypeError, ValueError):
                run.message("the saved env state does not fit: the resumed run starts new episodes")
        stop_at = deadline(cfg.hours, run)
        model = learner.model.eval()
        while not finished(cfg, run, stop_at):
            started = time.perf_counter()
            clock = Stopwatch()  # the round's seconds per part, into metrics.csv (and scripts.bench ppo)
            if not players.play(model, ro, rng, clock, count):
                break
            adv, returns = gae(ro.rewards, ro.values, ro.next_values, ro.terminal, ro.boundary,
                               cfg.gamma, cfg.gae_lambda)
            acted = time.perf_counter()
            metrics = learner.update(ro, adv, returns, rng, run.step - T * N, on_bad, clock)
            metrics["seconds"] = {"rollout": acted - started, "update": time.perf_counter() - acted, **clock.totals}
            run.log_update(metrics, callback)
            side()
            if run.due():
                save()
        save(final=True)
    finally:
        players.close()
    return learner
