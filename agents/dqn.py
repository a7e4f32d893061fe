"""DQN from pixels (Mnih et al. 2015, Nature) on the nets/ stack, one training loop read top to bottom.

By default Double DQN, a dueling head and 3-step returns (the settings that learned Pong here; each
can be switched off for Nature's plain DQN), QR-DQN's quantiles with `quantiles` K, prioritized replay
with `prioritized`. Nature's network on the deepmind preset, a two-layer MLP on classic-control tasks;
Huber loss on the taken action; a target network synced every target_update steps; Atari rewards
clipped to [-1, 1]. Lost lives are terminal for the learner while the game goes on (ale-py's own
episodic_life resets the whole game), so progress.csv holds whole-game scores. Episode ends are
exact: info["final_obs"] is the bootstrap of a truncated episode (agents/replay.py).

Experience comes from a source: LocalEnvs (num_envs envs in this process) or, with workers, RayActors
(Ape-X: DQNWorker actors, each lane with its own epsilon). Both step their envs with the same Acting
class; the loop in train() neither knows nor cares which one feeds it. A checkpoint holds both networks,
the optimizer, the random state and the counters; the replay buffer only with save_buffer.
"""
import dataclasses
import math
from typing import NamedTuple

import numpy as np

import envs
from agents import evaluation
from agents.distributed import Fleet, lost_reporter, report_rollout, shut_down, start_ray, worker_seed
from agents.replay import (ReplayBuffer, SharedReplay, final_observations, make_buffer, restore_buffer, save_buffer,
                           slots_per_env)
from agents.run import Stopwatch, check_update, deadline, finished
from agents.schedule import parse_schedule, scheduled
from envs.atari import frame_stack
from nets import (Adam, Conv2d, DuelingHead, Flatten, Linear, QuantileHuber, ReLU, RMSProp, Sequential,
                  TakenActionHuber, forward_shared_input)

HIDDEN_FLAGS = ()
# the values a setting may take (its flag's choices; resolved() refuses any other)
CHOICES = {"preset": ("deepmind", "classic"), "network": ("auto", "nature", "mlp"), "optimizer": ("adam", "rmsprop"),
           "eval_sticky": ("auto", "true", "false")}
BROADCAST_EVERY = 50  # updates between weight broadcasts to the actors: 200 agent steps (Ape-X: 100)
CHUNK_STEPS = 256  # agent steps per actor call (Ape-X sends 50-step batches)


@dataclasses.dataclass
class Config:
    agent: str = "dqn"  # which algorithm (fixed)
    game: str = "pong"  # short name or env id; an Atari id names its protocol: PongNoFrameskip-v4 no sticky
    # actions, ALE/Pong-v5 sticky ones (--list-games lists them)
    preset: str = ""  # deepmind (Atari) or classic (CartPole-v1, ...); empty: by game
    sticky: bool = False  # ALE v5 sticky actions; False: NoFrameskip-v4, the protocol CleanRL and SB3 report
    seed: int = 0  # seeds the network, exploration, replay sampling and the envs
    total_steps: int = 0  # stop after this many agent steps (0: no limit; the Pong target: 1.5M)
    hours: float = 0.0  # stop after this many hours of wall clock in all, a resumed run's included (0: no limit)
    num_envs: int = 1  # envs stepped together (CleanRL: 1)
    network: str = "auto"  # nature (conv, Atari) or mlp (classic); auto: by preset
    hidden: int = 0  # fully connected units; 0: 512 for nature (Nature), 128 for mlp (own choice)
    dueling: bool = True  # dueling value/advantage head (Wang et al. 2016; own Pong run)
    double: bool = True  # Double DQN targets (van Hasselt et al. 2016; SB3 and CleanRL use plain DQN)
    quantiles: int = 0  # K > 0: QR-DQN, K quantiles of the return per action and the quantile Huber
    # loss (Dabney et al. 2018: 200); Q is their mean. 0: one expected value per action (Nature)
    n_step: int = 3  # n-step returns (Rainbow and own Pong run: 3; Nature, CleanRL: 1)
    gamma: float = 0.99  # discount (Nature, CleanRL)
    buffer_size: int = 1_000_000  # frames stored (Nature, CleanRL: 1M; 84x84 frames: 7 GB)
    prioritized: bool = False  # prioritized replay (Schaul et al. 2016), proportional, as in Rainbow
    priority_alpha: float = 0.5  # priority = (|TD error| + 1e-6) ** alpha (Rainbow: 0.5; Schaul: 0.6)
    priority_beta: float = 0.4  # importance-weight exponent at step 0, rising linearly to 1 (Rainbow: 0.4)
    priority_beta_steps: int = 1_500_000  # agent steps of that rise (the Pong target's 1.5M)
    learning_starts: int = 50_000  # transitions before learning (Nature, own Pong run: 50k; CleanRL: 80k)
    train_freq: int = 4  # agent steps per update (Nature, CleanRL: 4)
    batch_size: int = 32  # transitions per update (Nature, CleanRL: 32)
    target_update: int = 1000  # agent steps between target-network syncs (CleanRL: 1000)
    tau: float = 1.0  # target sync: 1 copies (CleanRL's default), < 1 blends target = tau*online + (1-tau)*target
    optimizer: str = "adam"  # adam (CleanRL) or rmsprop (Nature: centered, decay 0.95, eps 0.01, lr 2.5e-4)
    lr: float = 1e-4  # learning rate (CleanRL dqn_atari: 1e-4)
    lr_end: float = 0.0  # with lr_steps: the learning rate reached at lr_steps (own Pong run: 3e-5)
    lr_steps: int = 0  # agent steps of linear decay from lr to lr_end, then flat (0: lr throughout, CleanRL)
    lr_schedule: str = ""  # piecewise learning rate by agent step instead, "0:1e-4,1605030:3e-5": each value
    # from its step on (the shipped Pong agent's drop, made by hand on a resume); empty: lr, or its decay
    adam_eps: float = 1.5e-4  # Adam's epsilon (Rainbow / Dopamine: 0.01 / batch 32)
    rmsprop_decay: float = 0.95  # RMSProp decay (Nature: 0.95)
    rmsprop_eps: float = 0.01  # RMSProp epsilon (Nature's min squared gradient 0.01; here added after the sqrt)
    max_grad_norm: float = 10.0  # clip the gradient's global norm (SB3: 10; 0: off)
    epsilon_start: float = 1.0  # exploration at step 0 (Nature, CleanRL: 1)
    epsilon_end: float = 0.01  # exploration after the decay (CleanRL: 0.01; Nature: 0.1)
    epsilon_steps: int = 250_000  # agent steps of linear decay (CleanRL 1M of 10M; shorter for a 1.5M-step run)
    eval_epsilon: float = 0.05  # exploration of evaluation games, explore=False (Nature: 0.05)
    target_epsilon: float = 0.0  # bootstrap on an epsilon-greedy policy's expected value (Expected SARSA);
    # 0: the greedy max of Q-learning (Nature, CleanRL). eval_epsilon values a play that survives random moves
    eval_every: int = 100_000  # agent steps between evaluations on whole games (0: never)
    eval_episodes: int = 10  # games per evaluation
    eval_sticky: str = "auto"  # the evaluation games' protocol: auto (the training one), true (ALE v5 sticky
    # actions) or false (NoFrameskip-v4), like SB3's separate eval env: train with sticky, score without
    life_loss_terminal: bool = True  # a lost life is terminal for the learner; the game goes on (DeepMind)
    log_every: int = 10_000  # agent steps between "update" reports (loss, mean Q, epsilon, time split)
    max_bad_updates: int = 5  # stop after this many NaN/inf updates in a row
    checkpoint_minutes: float = 5.0  # write checkpoint.npz this often
    keep_snapshots: int = 0  # also keep the playing weights of the last K saves in snapshots/ (ship --average)
    save_buffer: bool = False  # also write replay.npz beside the checkpoint when the run stops (big)
    workers: int = 0  # Ray actors stepping the envs, Ape-X style (RayActors below); 0: all here
    ray_address: str = ""  # with workers: join this Ray cluster (auto, HOST:6379); empty: start a local Ray


def resolved(cfg):
    """Config with derived values filled in (preset, network, hidden); ValueError on bad values."""
    env_id = envs.resolve(cfg.game)
    preset = cfg.preset or ("deepmind" if envs.atari.is_atari(env_id) else "classic")
    if preset not in CHOICES["preset"]:
        raise ValueError(f"dqn needs the deepmind preset on Atari or classic on control tasks, got {preset!r}")
    envs.env_spec(env_id, preset, cfg.sticky)  # raises on a preset that does not fit the game
    network = cfg.network if cfg.network != "auto" else ("nature" if preset == "deepmind" else "mlp")
    if network not in ("nature", "mlp") or (network == "nature") != (preset == "deepmind"):
        raise ValueError(f"network must be auto, nature (deepmind preset) or mlp (classic); {cfg.network!r} "
                         f"does not fit {env_id} on the {preset} preset")
    hidden = cfg.hidden or (512 if network == "nature" else 128)
    if cfg.optimizer not in ("adam", "rmsprop"):
        raise ValueError(f"optimizer must be adam or rmsprop, got {cfg.optimizer!r}")
    for name in ("num_envs", "hidden", "n_step", "buffer_size", "train_freq", "batch_size", "target_update",
                 "eval_episodes", "log_every"):
        value = hidden if name == "hidden" else getattr(cfg, name)
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name in ("seed", "total_steps", "learning_starts", "epsilon_steps", "eval_every", "hours", "max_grad_norm",
                 "lr_steps", "lr_end", "keep_snapshots", "quantiles"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in ("gamma", "epsilon_start", "epsilon_end", "eval_epsilon", "target_epsilon"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    if not 0.0 <= cfg.priority_alpha <= 1.0 or not 0.0 <= cfg.priority_beta <= 1.0 or cfg.priority_beta_steps < 0:
        raise ValueError(f"priority_alpha and priority_beta must be in [0, 1] and priority_beta_steps >= 0, got "
                         f"{cfg.priority_alpha}, {cfg.priority_beta}, {cfg.priority_beta_steps}")
    if cfg.eval_sticky not in ("auto", "true", "false"):
        raise ValueError(f"eval_sticky must be auto, true or false, got {cfg.eval_sticky!r}")
    if cfg.prioritized and cfg.workers > 0:
        raise ValueError("prioritized replay runs in the single-process loop only: use --workers 0")
    if not cfg.lr > 0 or not math.isfinite(cfg.lr):
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if not 0.0 < cfg.tau <= 1.0 or not math.isfinite(cfg.lr_end):
        raise ValueError(f"tau must be in (0, 1] and lr_end finite, got {cfg.tau}, {cfg.lr_end}")
    if cfg.lr_steps > 0 and not cfg.lr_end > 0:
        raise ValueError(f"lr_end must be > 0 with lr_steps (a learning rate of 0 learns nothing), got {cfg.lr_end}")
    if parse_schedule(cfg.lr_schedule, "lr_schedule") and cfg.lr_steps > 0:
        raise ValueError("give lr_schedule or lr_steps (with lr_end), not both")
    try:  # with workers, each actor's envs get their own share of the buffer
        slots_per_env(cfg.buffer_size // max(cfg.workers, 1), cfg.num_envs, frame_stack(preset), cfg.n_step)
        fits = cfg.learning_starts <= cfg.buffer_size // 2
    except ValueError:
        fits = False
    if not fits:
        per = f" on each of {cfg.workers} workers" if cfg.workers > 0 else ""
        raise ValueError(f"buffer_size {cfg.buffer_size} is too small for num_envs {cfg.num_envs}{per}, "
                         f"n_step {cfg.n_step} and learning_starts {cfg.learning_starts} (needs 2x it)")
    return dataclasses.replace(cfg, preset=preset, network=network, hidden=hidden)


# ----------------------------------------------------------------------------- the Q-network

def build_q_network(obs_shape, n_actions, network, hidden, dueling, rng, quantiles=0):
    """Nature's conv trunk (or one hidden layer on vectors), then hidden -> n_actions or a dueling
    head; with quantiles K, K outputs per action (N, A*K), action-major."""
    if network == "nature":
        c, h, w = obs_shape
        trunk = [Conv2d(c, 32, 8, stride=4, input_grad=False, rng=rng), ReLU(),  # no dx: its input is data
                 Conv2d(32, 64, 4, stride=2, rng=rng), ReLU(), Conv2d(64, 64, 3, stride=1, rng=rng), ReLU(),
                 Flatten()]
        for k, s in ((8, 4), (4, 2), (3, 1)):
            h, w = (h - k) // s + 1, (w - k) // s + 1
        features = 64 * h * w  # 3136 on 84x84
    else:
        features = int(np.prod(obs_shape))
        trunk = [Linear(features, hidden, input_grad=False, rng=rng), ReLU()]  # no dx: its input is data
        features = hidden
    atoms = max(int(quantiles), 1)
    if dueling:
        head = [DuelingHead(features, hidden, n_actions, atoms, rng=rng)]
    else:
        head = [Linear(features, hidden, rng=rng), ReLU(), Linear(hidden, n_actions * atoms, rng=rng)]
    return Sequential(*trunk, *head)


def init_weights(init, cfg):
    """An --init checkpoint's (models, header) -> the weights for this run's network. A plain DQN file
    (one value per action) starts a QR network with every quantile of an action at that action's
    Q-value: the head's last layer's columns repeated K times, action-major, so the run starts out
    playing exactly as the file does and the quantile loss spreads them from there."""
    state = init[0]["model"].state_dict()
    config = init[1].get("config") if isinstance(init[1].get("config"), dict) else {}
    saved = int(config.get("quantiles", 0) or 0)
    if saved == cfg.quantiles:
        return state
    if saved:
        raise ValueError(f"a network with {saved} quantiles cannot start one with {cfg.quantiles}")
    last = str(max(int(key.split(".")[0]) for key in state))
    return {key: np.repeat(value, cfg.quantiles, axis=-1)
            if key.split(".")[0] == last and key.split(".")[1] in ("W", "b", "Wv2", "bv2", "Wa2", "ba2") else value
            for key, value in state.items()}


def network_input(obs, obs_scale, out=None):
    """(N, *obs) in the env's dtype -> float32 for the network; uint8 frames are scaled by 1/255 here."""
    if out is None:
        out = np.empty(np.shape(obs), np.float32)
    np.multiply(obs, np.float32(obs_scale), out=out)  # (N, C, H, W) or (N, D)
    return out


def q_values(model, obs, obs_scale, quantiles=0):
    """(N, *obs) -> Q (N, A) float32."""
    return mean_q(model.forward(network_input(obs, obs_scale)), quantiles)


def per_action(out, quantiles):
    """The network's output (N, A), or (N, A*K) with K quantiles per action -> (N, A) or (N, A, K)."""
    return out.reshape(len(out), -1, quantiles) if quantiles else out


def mean_q(out, quantiles):
    """The network's output -> Q (N, A): a quantile network's is the mean of its K quantiles."""
    return per_action(out, quantiles).mean(axis=2) if quantiles else out


def epsilon_at(step, cfg):
    """Linear decay from epsilon_start to epsilon_end over epsilon_steps agent steps, then flat."""
    if cfg.epsilon_steps == 0:
        return cfg.epsilon_end
    frac = min(step / cfg.epsilon_steps, 1.0)
    return cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start)


def lr_at(step, cfg):
    """Learning rate: lr, or with lr_steps a linear decay from lr to lr_end over that many agent
    steps, then flat (SB3's linear schedule), or lr_schedule's piecewise values (the Pong agent's own
    run dropped 1e-4 to 3e-5 by hand at step 1,605,030)."""
    if cfg.lr_schedule:
        return scheduled(parse_schedule(cfg.lr_schedule, "lr_schedule"), step, cfg.lr)
    if cfg.lr_steps <= 0:
        return cfg.lr
    return cfg.lr + min(step / cfg.lr_steps, 1.0) * (cfg.lr_end - cfg.lr)


def beta_at(step, cfg):
    """Prioritized replay's importance exponent: priority_beta at step 0, linearly up to 1."""
    if cfg.priority_beta_steps <= 0:
        return 1.0
    return cfg.priority_beta + min(step / cfg.priority_beta_steps, 1.0) * (1.0 - cfg.priority_beta)


# ----------------------------------------------------------------------------- acting

def obs_scale_of(space):
    """The network sees uint8 frames scaled by 1/255 (network_input) and anything else as it is."""
    return 1.0 / 255.0 if space.dtype == np.uint8 else 1.0


def epsilon_greedy(greedy, eps, n, n_actions, rng):
    """n actions: with probability eps (a number, or one per row) a uniform random one, else the
    greedy one. greedy() gives those; it is not called when every row explores (epsilon 1 while the
    replay fills). At eps 0 nothing is drawn from rng."""
    if not np.any(np.asarray(eps) > 0):
        return greedy()
    explore = rng.random(n) < eps  # (N,)
    best = np.zeros(n, np.int64) if explore.all() else greedy()
    return np.where(explore, rng.integers(n_actions, size=n), best)


class Step(NamedTuple):
    """One step of num_envs envs, as the replay buffer takes it."""
    actions: np.ndarray  # (N,) int64
    rewards: np.ndarray  # (N,) as stored: clipped on Atari
    terminal: np.ndarray  # (N,) bool: no bootstrap (the game ended or a life was lost)
    ended: np.ndarray  # (N,) bool: the env's episode ended and it reset
    next_obs: np.ndarray  # (N, *obs): with same-step autoreset, a new episode's first where ended
    info: dict  # the vector env's info (final_obs of the ended episodes)


class Acting:
    """The acting step, written once for LocalEnvs and the Ray actors: num_envs envs stepped
    epsilon-greedily on a Q-network. A lost life is terminal for the learner (DeepMind's episodic
    life: the game and its frame stack go on), rewards are clipped to [-1, 1] on Atari (Nature), and
    whole games are counted for progress.csv."""

    def __init__(self, cfg, venv, rng, seed, clock=None):
        self.venv, self.rng, self.clock = venv, rng, clock or Stopwatch()
        self.quantiles, self.clip = cfg.quantiles, cfg.preset == "deepmind"
        self.n_actions = int(venv.single_action_space.n)
        self.obs_scale = obs_scale_of(venv.single_observation_space)
        self.obs, info = venv.reset(seed=seed)
        self.lives = info.get("lives") if cfg.life_loss_terminal else None
        self.game_return = np.zeros(cfg.num_envs)
        self.game_length = np.zeros(cfg.num_envs, np.int64)

    def step(self, model, eps):
        """One step of every env at epsilon eps -> (Step, [(return, length) of each game that ended])."""
        n = len(self.obs)
        actions = epsilon_greedy(lambda: q_values(model, self.obs, self.obs_scale, self.quantiles).argmax(axis=1),
                                 eps, n, self.n_actions, self.rng)
        self.clock.mark("act")
        next_obs, rewards, terminated, truncated, info = self.venv.step(actions)
        self.clock.mark("env")
        ended = terminated | truncated
        terminal = terminated.copy()
        if self.lives is not None and "lives" in info:
            terminal |= (info["lives"] < self.lives) & ~ended  # a lost life, the game goes on
            self.lives = info["lives"]
        self.game_return += rewards
        self.game_length += 1
        games = [(float(self.game_return[i]), int(self.game_length[i])) for i in np.flatnonzero(ended)]
        self.game_return[ended], self.game_length[ended] = 0.0, 0
        self.obs = next_obs
        stored = np.sign(rewards) if self.clip else rewards
        return Step(actions, stored, terminal, ended, next_obs, info), games


class QAgent:
    """Epsilon-greedy on a Q-network: act(obs, explore) -> (actions (N,), Q-values (N, A)).

    explore=True uses `epsilon` (training sets it from the schedule; a loaded agent has the final
    one); explore=False is the evaluation protocol, `eval_epsilon` (Nature: 0.05)."""

    kind = "dqn"

    def __init__(self, model, env, n_actions, obs_scale, eval_epsilon=0.05, epsilon=0.01, seed=0, rng=None,
                 quantiles=0):
        self.model = model
        self.quantiles = int(quantiles)
        self.env = env
        self.n_actions = int(n_actions)
        self.obs_scale = float(obs_scale)
        self.eval_epsilon = float(eval_epsilon)
        self.epsilon = float(epsilon)
        self.rng = rng if rng is not None else np.random.default_rng(seed)

    @classmethod
    def from_checkpoint(cls, models, header, seed=0):
        cfg = header["config"]
        return cls(models["model"].eval(), header["env"], int(header["n_actions"]), float(header["obs_scale"]),
                   eval_epsilon=float(cfg["eval_epsilon"]), epsilon=float(cfg["epsilon_end"]), seed=seed,
                   quantiles=int(cfg.get("quantiles", 0)))

    def act(self, obs, explore=True):
        q = q_values(self.model, obs, self.obs_scale, self.quantiles)  # (N, A)
        eps = self.epsilon if explore else self.eval_epsilon
        return epsilon_greedy(lambda: q.argmax(axis=1), eps, len(q), self.n_actions, self.rng), q


# ----------------------------------------------------------------------------- Ape-X actors

def apex_epsilons(n):
    """Ape-X's per-lane exploration floor: 0.4 ** (1 + 7 j / (n - 1)) for lane j of n, from 0.4 down
    to 0.4 ** 8, so some lanes stay nearly greedy while others keep exploring."""
    if n == 1:
        return np.array([0.4])
    return 0.4 ** (1 + 7 * np.arange(n) / (n - 1))


def newest_frames(obs, stack):
    """(N, K, H, W) stacks -> (N, 1, H, W): a replay slot keeps only obs[-1] (agents/replay.py)."""
    return obs[:, -1:] if stack > 1 else obs


class DQNWorker:
    """A Ray actor (agents/distributed.py starts it): num_envs envs, a copy of the Q-network and its
    lanes' epsilon floors. collect() runs the acting step and returns the transitions, sending only
    each observation's newest frame (the buffer rebuilds the stacks), tagged with its weights version."""

    def __init__(self, cfg, index, seed, epsilons):
        self.cfg, self.index = Config(**cfg), index
        self.rng = np.random.default_rng(seed)
        c = self.cfg
        self.venv = envs.make_vector(c.game, c.preset, c.num_envs, sticky=c.sticky, training=False)
        space, n_actions = self.venv.single_observation_space, int(self.venv.single_action_space.n)
        self.model = build_q_network(space.shape, n_actions, c.network, c.hidden, c.dueling, self.rng,
                                     c.quantiles).eval()
        self.acting = Acting(c, self.venv, self.rng, seed)
        self.stack = frame_stack(c.preset)
        self.floor = np.asarray(epsilons, np.float64)  # (N,): this actor's lanes' Ape-X epsilons
        self.fresh = True  # the next chunk carries the first observations (buffer.start)
        self.version = -1

    def set_weights(self, version, weights):
        self.model.load_state_dict(weights)
        self.version = version

    def collect(self, steps, step):
        """About `steps` agent steps at the exploration of agent step `step`, as arrays over (T, N)."""
        eps = np.maximum(epsilon_at(step, self.cfg), self.floor)  # (N,)
        start = newest_frames(self.acting.obs, self.stack).copy() if self.fresh else None
        self.fresh = False
        out = {k: [] for k in ("actions", "rewards", "terminal", "ended", "next")}
        final_at, final_frames, games = [], [], []
        for t in range(max(1, math.ceil(steps / self.cfg.num_envs))):
            s, ended_games = self.acting.step(self.model, eps)
            games += ended_games
            for i in np.flatnonzero(s.ended):
                final_at.append((t, i))
                final_frames.append(np.array(newest_frames(s.info["final_obs"][i][None], self.stack)[0]))  # a copy
            for k, v in zip(out, (s.actions, s.rewards, s.terminal, s.ended, newest_frames(s.next_obs, self.stack))):
                out[k].append(np.array(v))
        chunk = {k: np.stack(v) for k, v in out.items()}  # (T, N, ...)
        chunk.update(worker=self.index, version=self.version, start=start, episodes=games,
                     steps=int(chunk["actions"].size), final_at=np.array(final_at, np.int64).reshape(-1, 2),
                     final_frames=np.array(final_frames))
        return chunk


# ----------------------------------------------------------------------------- learning

class _NoClock:
    def mark(self, name):
        pass


_NO_CLOCK = _NoClock()


class Learner:
    """Online and target networks, the optimizer and the (Double) DQN update."""

    def __init__(self, cfg, obs_shape, n_actions, obs_scale, rng):
        self.cfg = cfg
        self.obs_scale = obs_scale
        self.online = build_q_network(obs_shape, n_actions, cfg.network, cfg.hidden, cfg.dueling, rng, cfg.quantiles)
        self.target = build_q_network(obs_shape, n_actions, cfg.network, cfg.hidden, cfg.dueling, rng,
                                      cfg.quantiles).eval()
        self.target.load_state_dict(self.online.state_dict())
        if cfg.optimizer == "adam":
            self.opt = Adam(self.online, lr=cfg.lr, eps=cfg.adam_eps)
        else:
            self.opt = RMSProp(self.online, lr=cfg.lr, decay=cfg.rmsprop_decay, eps=cfg.rmsprop_eps, centered=True)
        self.loss = QuantileHuber(1.0) if cfg.quantiles else TakenActionHuber(1.0)
        self._inputs = {}
        self.updates = 0
        self.bad_in_a_row = 0
        self.bad_total = 0

    def _input(self, name, obs):
        """network_input into an array kept across updates (a fresh 3.6 MB batch per call costs
        page faults); obs and next_obs get their own, as a layer may hold its input for backward."""
        buf = self._inputs.get(name)
        if buf is None or buf.shape != obs.shape:
            buf = self._inputs[name] = np.empty(obs.shape, np.float32)
        return network_input(obs, self.obs_scale, out=buf)

    def _next_values(self, batch):
        """The target net's outputs on next_obs, (B, A) or (B, A, K), and the action each bootstrap
        takes (B,): chosen by the online net under Double DQN, by the target net otherwise."""
        x_next = self._input("next_obs", batch.next_obs)  # (B, *obs) float32
        k = self.cfg.quantiles
        if self.cfg.double:  # both networks read s': their first convs share one im2col and one matmul
            out, chooser = forward_shared_input([self.target, self.online.eval()], x_next)
        else:
            out = chooser = self.target.forward(x_next)
        q_next = per_action(out, k)  # (B, A) or (B, A, K)
        return q_next, mean_q(chooser, k).argmax(axis=1)  # (B,)

    def targets(self, batch):
        """r + gamma^m max_a Q_target(s', a), with the online net choosing a under Double DQN.
        With target_epsilon e the bootstrap is the epsilon-greedy policy's expected value instead:
        (1 - e) Q_target(s', best) + e mean_a Q_target(s', a) (Expected SARSA)."""
        q_next, best = self._next_values(batch)  # (B, A), (B,)
        bootstrap = q_next[np.arange(len(best)), best]  # (B,)
        e = self.cfg.target_epsilon
        if e > 0:
            bootstrap = (1.0 - e) * bootstrap + e * q_next.mean(axis=1)  # (B,)
        return (batch.returns + batch.discounts * bootstrap).astype(np.float32)  # (B,)

    def quantile_targets(self, batch):
        """QR-DQN's target distribution: atoms r + gamma^m theta_j(s', best) (B, K), equally likely.
        With target_epsilon e, the epsilon-greedy policy's mixture: every action's K atoms (B, A*K),
        best's with probability (1 - e + e/A) / K and each other's with (e/A) / K."""
        q_next, best = self._next_values(batch)  # (B, A, K), (B,)
        n, a, k = q_next.shape
        e = self.cfg.target_epsilon
        if e > 0:
            atoms = q_next.reshape(n, a * k)  # (B, A*K)
            chance = np.full((n, a), e / a, np.float32)
            chance[np.arange(n), best] += 1.0 - e
            weights = np.repeat(chance / k, k, axis=1)  # (B, A*K), action-major like the atoms
        else:
            atoms, weights = q_next[np.arange(n), best], None  # (B, K)
        return (batch.returns[:, None] + batch.discounts[:, None] * atoms).astype(np.float32), weights

    def update(self, batch, clock=None):
        """One gradient step on a Batch; returns a metrics dict (skipped=True when NaN/inf appeared).
        A prioritized batch's importance weights scale the loss; td_errors (B,) keeps Q - target
        for its new priorities. clock: a Stopwatch to charge forward, backward and optimizer to
        (scripts.bench dqn --vs-torch)."""
        clock = clock or _NO_CLOCK
        k = self.cfg.quantiles
        if k:
            y, y_weights = self.quantile_targets(batch)  # (B, M), (B, M) or None
        else:
            y = self.targets(batch)  # (B,)
        out = self.online.train().forward(self._input("obs", batch.obs))  # (B, A) or (B, A*K)
        q = per_action(out, k)  # (B, A) or (B, A, K)
        if k:  # a sample's quantile loss is its priority (Rainbow: its distributional loss)
            rows = np.arange(len(y))
            q_taken = q[rows, batch.actions]  # (B, K)
            value = self.loss.forward(q_taken, y, y_weights, batch.weights)
            self.td_errors = self.loss.per_sample  # (B,)
            dq = np.zeros_like(q)  # only the taken actions get a gradient
            dq[rows, batch.actions] = self.loss.backward()
        else:  # the gather, the Huber loss and the scatter of its gradient in one loss
            value = self.loss.forward(q, batch.actions, y, batch.weights)
            q_taken, self.td_errors = self.loss.taken, self.loss.diff  # (B,), (B,)
            dq = self.loss.backward()  # (B, A)
        clock.mark("forward")
        self.online.backward(dq.reshape(out.shape))
        clock.mark("backward")
        grads = [g for _, _, g in self.online.parameters()]
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
        self.online.eval()
        if not (math.isfinite(value) and math.isfinite(norm)):
            self.bad_in_a_row += 1
            self.bad_total += 1
            clock.mark("optimizer")
            return {"loss": value, "skipped": True}
        if 0 < self.cfg.max_grad_norm < norm:  # nets.clip_grad_norm, without computing the norm twice
            for g in grads:
                g *= self.cfg.max_grad_norm / (norm + 1e-6)
        self.opt.step()
        clock.mark("optimizer")
        self.updates += 1
        self.bad_in_a_row = 0
        return {"loss": value, "q_mean": float(q_taken.mean()), "grad_norm": norm, "skipped": False}

    def restore(self, models, header, rest):
        """Weights, target, optimizer state and update count from a checkpoint."""
        self.online.load_state_dict(models["model"].state_dict())
        self.target.load_state_dict(models["target"].state_dict())
        self.opt.load_state_dict(header.get("optim", {"t": 0}),
                                 {k[6:]: v for k, v in rest.items() if k.startswith("optim.")})
        self.opt.lr = self.cfg.lr  # the run's config rules: `--resume RUN --lr X` changes it (lr_at: each update)
        self.updates = int(header.get("updates", 0))

    def checkpoint(self):
        """(models, header fields, extra arrays) for run.save."""
        info, opt_arrays = self.opt.state_dict()
        return ({"model": self.online, "target": self.target}, {"updates": self.updates, "optim": info},
                {f"optim.{k}": v for k, v in opt_arrays.items()})

    def learn(self, replay, run, clock):
        """Sample a batch at this step's learning rate and beta, update, and give the batch's
        transitions their new priorities; then NaN/inf is dealt with (agents.run.check_update)."""
        self.opt.lr = lr_at(run.step, self.cfg)
        batch = replay.sample(self.cfg.batch_size, beta_at(run.step, self.cfg))
        clock.mark("replay_sample")
        metrics = self.update(batch)
        clock.mark("update")
        if batch.index is not None and not metrics["skipped"]:
            replay.update_priorities(batch.index, self.td_errors)
            clock.mark("replay_sample")
        check_update(self, metrics, run)
        return metrics

    def sync_target(self):
        if self.cfg.tau >= 1.0:
            self.target.load_state_dict(self.online.state_dict())
            return
        for (_, t, _), (_, p, _) in zip(self.target.parameters(), self.online.parameters()):
            t *= 1.0 - self.cfg.tau
            t += self.cfg.tau * p


# ----------------------------------------------------------------------------- experience sources

class LocalEnvs:
    """Experience from num_envs envs in this process: one vector step per collect(), into one replay
    buffer (saved with save_buffer)."""

    def __init__(self, cfg, rng, clock):
        self.cfg, self.rng, self.clock = cfg, rng, clock
        self.venv = envs.make_vector(cfg.game, cfg.preset, cfg.num_envs, sticky=cfg.sticky, training=False)
        self.spec = self.venv.grok_spec
        space = self.venv.single_observation_space
        self.obs_shape, self.n_actions = space.shape, int(self.venv.single_action_space.n)
        self.obs_scale = obs_scale_of(space)
        self.replay = make_buffer(cfg, space.shape, space.dtype, rng)
        self.acting, self.epsilon = None, cfg.epsilon_start

    def start(self, run, learner, resumed, callback):
        if resumed and self.cfg.save_buffer:
            self.replay = restore_buffer(self.replay, run)
        elif resumed:
            run.message("the replay buffer is not saved (no save_buffer): refilling it before learning again")
        self.model = learner.online
        # envs are re-seeded from (seed, step) so a resumed run does not replay the same games
        seed = int(self.cfg.seed * 1_000_003 + run.step) % (2**31)
        self.acting = Acting(self.cfg, self.venv, self.rng, seed, self.clock)
        self.replay.start(self.acting.obs)

    def collect(self, run, callback):
        self.epsilon = epsilon_at(run.step, self.cfg)
        s, games = self.acting.step(self.model, self.epsilon)
        self.replay.add(s.actions, s.rewards, s.terminal, s.ended, s.next_obs,
                        final_observations(s.info, s.next_obs, s.ended))
        self.clock.mark("replay_add")
        run.count(self.cfg.num_envs, games, callback)
        self.clock.mark("other")
        return True

    def updated(self, learner):
        pass

    def status(self):
        return {"epsilon": self.epsilon, "buffer": len(self.replay)}

    def saved(self, run):
        if self.cfg.save_buffer:
            save_buffer(self.replay, run)

    def close(self):
        self.venv.close()


class RayActors:
    """Experience from `workers` DQNWorker actors, Ape-X style (Horgan et al. 2018): each sends chunks
    of CHUNK_STEPS transitions into its own replay buffer (SharedReplay samples them as one), the learner
    keeps LocalEnvs' pace of one update every train_freq agent steps, and the online network goes out
    every BROADCAST_EVERY updates. The buffers are not saved: a resumed run refills them."""

    def __init__(self, cfg, rng, clock):
        self.cfg, self.clock = cfg, clock
        probe = envs.make_vector(cfg.game, cfg.preset, 1, sticky=cfg.sticky, training=False)
        self.spec = probe.grok_spec
        space = probe.single_observation_space
        self.obs_shape, self.n_actions = space.shape, int(probe.single_action_space.n)
        self.obs_scale = obs_scale_of(space)
        probe.close()
        self.replay = SharedReplay([ReplayBuffer(cfg.buffer_size // cfg.workers, space.shape, space.dtype,
                                                 cfg.num_envs, frame_stack(cfg.preset), cfg.n_step, cfg.gamma, rng)
                                    for _ in range(cfg.workers)], rng)
        self.ray, self.started, self.fleet = None, False, None
        self.updates, self.again = 0, None

    def start(self, run, learner, resumed, callback):
        cfg, n = self.cfg, self.cfg.num_envs
        if resumed:
            run.message("replay buffers are not saved with workers: refilling them before learning again")
        self.ray, self.started = start_ray(cfg.ray_address, cfg.workers)
        config, first_step, eps = dataclasses.asdict(cfg), run.step, apex_epsilons(cfg.workers * n)
        self.fleet = Fleet(self.ray, DQNWorker, lambda i, g: (config, i, worker_seed(cfg.seed, first_step, i, g),
                                                              eps[i * n:(i + 1) * n]),
                           cfg.workers, lost_reporter(run, callback))
        self.model = learner.online
        self.fleet.broadcast(self.model.state_dict())
        for i in range(cfg.workers):
            self.fleet.call(i, "collect", CHUNK_STEPS, run.step)

    def collect(self, run, callback):
        """The next chunk any actor returns (False when none came within a second, or its actor was lost)."""
        if self.again is not None:  # the actor that answered last goes on, at the exploration of this step
            self.fleet.call(self.again, "collect", CHUNK_STEPS, run.step)
        got = self.fleet.next(timeout=1.0)
        self.clock.mark("wait")
        self.again = None if got is None else got[0]
        if got is None or got[1] is None:
            return False
        i, chunk = got
        self.replay.add_chunk(i, chunk)
        report_rollout(run, callback, chunk, self.fleet.generation[i])
        self.clock.mark("replay_add")
        return True

    def updated(self, learner):
        self.updates += 1
        if self.updates % BROADCAST_EVERY == 0:
            self.fleet.broadcast(learner.online.state_dict())
            self.clock.mark("broadcast")

    def status(self):
        return {"buffer": len(self.replay), "version": self.fleet.version}

    def saved(self, run):
        pass

    def close(self):
        shut_down(self.ray, self.fleet, self.started)


# ----------------------------------------------------------------------------- evaluation

def side_games(cfg, agent, run, callback):
    """The evaluations (whole games with the current network at eval_epsilon, into eval.csv) and
    videos this run plays beside its training (agents.evaluation.SideGames)."""
    def player():
        return QAgent(agent.model, agent.env, agent.n_actions, agent.obs_scale, cfg.eval_epsilon,
                      seed=10_000_000 + cfg.seed, quantiles=cfg.quantiles)

    sticky = cfg.sticky if cfg.eval_sticky == "auto" else cfg.eval_sticky == "true"
    return evaluation.SideGames(run, player, cfg.eval_every, cfg.eval_episodes, 10_000_000 + 1000 * cfg.seed,
                                sticky, explore=False, callback=callback)


# ----------------------------------------------------------------------------- training

def train(cfg, run, callback=None, init=None, resume=None, stopwatch=None):
    """Train until total_steps, hours, or a stop request. cfg: a resolved Config.

    init: (models, header) of a checkpoint to start the weights from; resume: the same for the run's
    own checkpoint. callback(metrics) gets "episode" events after every finished game, "eval" after
    every evaluation, "update" every log_every steps (with the seconds spent per part of the loop)
    and, with workers, "rollout" and "worker_lost". stopwatch: a Stopwatch to charge the time to."""
    rng = np.random.default_rng(cfg.seed)
    clock = stopwatch or Stopwatch()
    source = (RayActors if cfg.workers > 0 else LocalEnvs)(cfg, rng, clock)
    run.env = source.spec  # what checkpoints record is the env this run really plays
    obs_shape, n_actions, obs_scale = source.obs_shape, source.n_actions, source.obs_scale
    learner = Learner(cfg, obs_shape, n_actions, obs_scale, rng)
    agent = QAgent(learner.online.eval(), run.env, n_actions, obs_scale, cfg.eval_epsilon, rng=rng,
                   quantiles=cfg.quantiles)
    if init is not None:
        weights = init_weights(init, cfg)
        learner.online.load_state_dict(weights)
        learner.target.load_state_dict(weights)
    if resume is not None:
        learner.restore(*resume)
        rng.bit_generator.state = resume[1]["rng"]
        run.restore(resume[1])
    side = side_games(cfg, agent, run, callback)

    def save(final=False):
        models, fields, extra = learner.checkpoint()
        header = {"agent": "dqn", "obs_shape": list(obs_shape), "n_actions": n_actions, "obs_scale": obs_scale,
                  "rng": rng.bit_generator.state, **fields}
        if run.save(models, header, extra, final=final) and final:
            source.saved(run)

    next_update = run.step + cfg.train_freq
    next_sync = evaluation.next_multiple(run.step, cfg.target_update)
    next_log = evaluation.next_multiple(run.step, cfg.log_every)
    last, stop_at = {}, deadline(cfg.hours, run)
    try:
        source.start(run, learner, resume is not None, callback)
        clock.mark("setup")
        while not finished(cfg, run, stop_at):
            if source.collect(run, callback):
                learning = source.replay.sampleable() >= max(cfg.learning_starts, cfg.batch_size)
                while run.step >= next_update:  # train_freq agent steps per update, however many envs
                    next_update += cfg.train_freq
                    if learning:
                        last = learner.learn(source.replay, run, clock)
                        source.updated(learner)
                if run.step >= next_sync:
                    next_sync = evaluation.next_multiple(run.step, cfg.target_update)
                    if learning:
                        learner.sync_target()
                if side():
                    clock.mark("eval")
                if run.step >= next_log:
                    next_log = evaluation.next_multiple(run.step, cfg.log_every)
                    run.log_update({"updates": learner.updates, **source.status(), **last,
                                    "seconds": dict(clock.totals)}, callback)
            if run.due():
                save()
            clock.mark("other")
        save(final=True)
    finally:
        source.close()
    return learner
