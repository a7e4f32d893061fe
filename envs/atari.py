"""One environment factory: Atari through Gymnasium and ale-py, with the two standard preprocessings.

Wrapper order (fixed and documented, CleanRL's habit):
  karpathy:  ALE v5 (frameskip 4, rgb) -> KarpathyPong (crop, downsample, binarize, frame difference,
             actions restricted to up/down)
  deepmind:  ALE v5 with frameskip=1 -> [EpisodicLife, FireReset when training] -> AtariPreprocessing
             (no-op starts, skip 4 with max-pool, 84x84 grayscale) -> [ClipReward when training]
             -> FrameStackObservation(4, zero padding)
  classic:   gymnasium's classic-control env as it is (CartPole-v1 and friends)
Protocol: sticky=True is ALE v5 (repeat_action_probability 0.25); sticky=False is the
NoFrameskip-v4 protocol (no sticky actions) that CleanRL and SB3 report on. The ids those libraries
use name a protocol too: PongNoFrameskip-v4 (and every -v4 id) has no sticky actions, ALE/Pong-v5,
Pong-v5 (and the old -v0 ids) have them; atari_alias() reads which from Gymnasium's registry, and
every id plays through the same ALE v5 env, 4 frames a step, under the preset's wrappers.
"""
import difflib
import functools
import warnings

import ale_py
import cv2
import gymnasium as gym
import numpy as np
from ale_py.vector_env import AtariVectorEnv

gym.register_envs(ale_py)
# ALE's C++ side prints a two-line banner ("A.L.E: Arcade Learning Environment ...", "[Powered by
# Stella]") the first time a game loads, which put it before a command's one-line error: warnings and
# errors still print.
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Warning)

PRESETS = ("karpathy", "deepmind", "classic")
STICKY_PROB = 0.25
FRAME_STACK = 4  # frames in one observation of the deepmind preset


class UnknownGameError(ValueError):
    """A game name that is neither an ALE game nor a registered Gymnasium id."""


def ale_games():
    """{short name: env id} for every ALE game, e.g. {'pong': 'ALE/Pong-v5', ...}."""
    games = {}
    for env_id, spec in gym.registry.items():
        if env_id.startswith("ALE/") and env_id.endswith("-v5"):
            games[spec.kwargs.get("game")] = env_id
    return dict(sorted(games.items()))


def classic_games():
    return sorted(k for k, s in gym.registry.items()
                  if isinstance(s.entry_point, str) and "classic_control" in s.entry_point)


@functools.lru_cache(maxsize=None)
def playable_games():
    """[(name, id, id without sticky actions or "")] of every game the agents can play: each ALE game
    (its short name, its v5 id and its NoFrameskip-v4 id) and the classic-control tasks with discrete
    actions (Pendulum-v1 and MountainCarContinuous-v0 have continuous ones: no agent here plays them)."""
    rows = [(name, env_id, f"{env_id[4:-3]}NoFrameskip-v4" if f"{env_id[4:-3]}NoFrameskip-v4" in gym.registry else "")
            for name, env_id in ale_games().items()]
    for env_id in classic_games():
        with warnings.catch_warnings():  # CartPole-v0 is "out of date": listed all the same
            warnings.simplefilter("ignore")
            probe = gym.make(env_id)
        if isinstance(probe.action_space, gym.spaces.Discrete):
            rows.append((env_id, env_id, ""))
        probe.close()
    return rows


def atari_alias(game):
    """(ALE v5 id, sticky) for an Atari id typed as SB3, CleanRL or Gymnasium type it, else None.

    PongNoFrameskip-v4 -> ('ALE/Pong-v5', False): every -v4 id is registered without sticky actions;
    ALE/Pong-v5, Pong-v5 and the old Pong-v0 ids -> sticky True. A short name ('pong') names no protocol."""
    if not isinstance(game, str):
        return None
    spec = gym.registry.get(game)
    if spec is not None and spec.entry_point == "ale_py.env:AtariEnv" and spec.kwargs.get("obs_type", "rgb") == "rgb":
        env_id = ale_games().get(spec.kwargs.get("game"))
        if env_id is not None:
            return env_id, float(spec.kwargs.get("repeat_action_probability", STICKY_PROB)) > 0
    lowered = game.strip().lower()
    for env_id in ale_games().values():
        if lowered in (env_id.lower(), env_id[4:].lower()):  # 'ALE/Pong-v5', 'Pong-v5'
            return env_id, True
    return None


def check_protocol(game, sticky):
    """A ValueError when the id a person typed names the other protocol than `sticky` (PongNoFrameskip-v4
    with sticky actions, ALE/Pong-v5 without). For typed ids only: code that makes an env from a
    recorded env id (ALE/Pong-v5) passes the protocol it recorded, either one."""
    alias = atari_alias(game)
    if alias is not None and alias[1] != bool(sticky):
        implied = "sticky actions (ALE v5)" if alias[1] else "no sticky actions (NoFrameskip-v4)"
        other = alias[0][4:-3] + ("NoFrameskip-v4" if alias[1] else "-v5")
        raise ValueError(f"game {game} means {implied}, but sticky is {str(bool(sticky)).lower()}: "
                         f"drop the sticky setting or use {other}")


def resolve(game):
    """Return the full env id for a short name or id; UnknownGameError with close names otherwise.
    Atari ids of every version (PongNoFrameskip-v4, Pong-v5) resolve to the ALE v5 id (atari_alias)."""
    if not isinstance(game, str) or not game:
        raise UnknownGameError(f"game must be a non-empty name, got {game!r}")
    games = ale_games()
    key = game.strip().lower().replace("-", "_").replace(" ", "_")
    if key in games:
        return games[key]
    alias = atari_alias(game)
    if alias is not None:
        return alias[0]
    if game in gym.registry:
        if any(game == row[1] for row in playable_games()):
            return game
        raise UnknownGameError(f"{game} is a Gymnasium env no agent here plays: they play ALE games and the "
                               f"classic-control tasks with discrete actions (python -m scripts.train --list-games)")
    for env_id in games.values():  # 'Pong'
        if env_id.lower() == f"ale/{key}-v5":
            return env_id
    names = list(games) + list(games.values()) + classic_games()
    close = difflib.get_close_matches(game, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownGameError(f"unknown game {game!r}{hint} (python -m scripts.train --list-games lists them all)")


def is_atari(env_id):
    return env_id.startswith("ALE/")


def default_preset(env_id):
    if not is_atari(env_id):
        return "classic"
    return "karpathy" if env_id == "ALE/Pong-v5" else "deepmind"


def frame_stack(preset):
    """Frames in one observation: DeepMind's stack of 4, else 1 (a vector or Karpathy's frame difference)."""
    return FRAME_STACK if preset == "deepmind" else 1


@functools.lru_cache(maxsize=None)
def action_names(env_id, preset):
    """The names of the agent's actions (cached: making an ALE env loads its ROM, which is slow)."""
    probe = gym.make(env_id)
    try:
        meanings = list(probe.unwrapped.get_action_meanings())
        if preset == "karpathy":
            up, down = up_down_actions(probe)
            return meanings[up], meanings[down]
        return tuple(meanings)
    finally:
        probe.close()


UP_IS_RIGHT = ("ALE/Pong-v5",)  # games whose paddle moves up on RIGHT and down on LEFT (Pong)


def readable_action_names(env_id, meanings):
    """The names people read for ALE's action meanings: in Pong, whose paddle moves up on RIGHT and down
    on LEFT, RIGHT is UP and LEFT is DOWN (RIGHTFIRE: UPFIRE); watch, replay and play all say so."""
    if env_id not in UP_IS_RIGHT:
        return list(meanings)
    return [m.replace("RIGHT", "UP").replace("LEFT", "DOWN") for m in meanings]


def env_spec(game, preset, sticky=True, training=False, noop_max=30):
    """Everything that defines what the agent sees: recorded in run configs, checkpoints, recordings."""
    env_id = resolve(game)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if preset == "classic" and is_atari(env_id):
        raise ValueError(f"preset 'classic' is for classic-control tasks, not {env_id}")
    if preset != "classic" and not is_atari(env_id):
        raise ValueError(f"preset {preset!r} needs an Atari game, not {env_id}")
    spec = {"env_id": env_id, "preset": preset}
    if is_atari(env_id):
        spec.update({
            "protocol": "v5-sticky" if sticky else "v4-nosticky",
            "repeat_action_probability": STICKY_PROB if sticky else 0.0,
            "frameskip": 4,
        })
        if preset == "deepmind":
            spec.update({"frame_stack": FRAME_STACK, "screen_size": 84, "noop_max": int(noop_max),
                         "training_wrappers": bool(training)})
    else:
        spec["protocol"] = "gymnasium"
    return spec


# ----------------------------------------------------------------------------- Karpathy's preset

def karpathy_preprocess(frame):
    """210x160x3 uint8 Pong frame -> (6400,) float32 of 0/1: crop, downsample by 2, drop background."""
    img = frame[35:195:2, ::2, 0]  # (80, 80): crop the score and borders, keep every 2nd pixel, red channel
    return ((img != 144) & (img != 109) & (img != 0)).astype(np.float32).ravel()  # (6400,)


def up_down_actions(env):
    """Indices of the game's up and down moves in its minimal action set (Pong: RIGHT is up)."""
    meanings = env.unwrapped.get_action_meanings()
    for up, down in (("UP", "DOWN"), ("RIGHT", "LEFT")):
        if up in meanings and down in meanings:
            return meanings.index(up), meanings.index(down)
    raise ValueError(f"{env.spec.id if env.spec else env} has no up/down moves for the karpathy preset")


def karpathy_preprocess_batch(frames):
    """(N, 210, 160, 3) uint8 -> (N, 6400) float32: karpathy_preprocess on a whole batch at once."""
    img = frames[:, 35:195:2, ::2, 0]  # (N, 80, 80)
    return ((img != 144) & (img != 109) & (img != 0)).astype(np.float32).reshape(len(frames), 6400)


def karpathy_frame(last, before=None):
    """Karpathy's preprocessed screen, bit-packed: (800,) uint8 for the 6400 0/1 pixels."""
    return np.packbits(karpathy_preprocess(last).astype(np.uint8))


class KarpathyPong(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Karpathy's "Pong from Pixels" input: the difference of consecutive preprocessed frames.

    Observation (6400,) float32 in {-1, 0, 1}; action 0 = up, 1 = down."""

    def __init__(self, env):
        # RecordConstructorArgs: env.spec can rebuild the stack (gym.make(env.spec), check_env)
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        self.actions = up_down_actions(env)
        self.action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (6400,), np.float32)
        self.prev = None

    def reset(self, **kwargs):
        frame, info = self.env.reset(**kwargs)
        self.prev = karpathy_preprocess(frame)
        return np.zeros(6400, np.float32), info

    def step(self, action):
        frame, reward, terminated, truncated, info = self.env.step(self.actions[int(action)])
        cur = karpathy_preprocess(frame)
        obs = cur - self.prev
        self.prev = cur
        return obs, reward, terminated, truncated, info


class KarpathyVector:
    """Karpathy's preprocessing over ale-py's C++ AtariVectorEnv returning raw RGB frames.

    The emulators step on C++ threads, the preprocessing is one numpy call for the whole batch;
    frames are bit-identical to the single-env path (tests/test_envs.py checks it)."""

    def __init__(self, env_id, num_envs, repeat_action_probability):
        self.env = AtariVectorEnv(
            game=gym.registry[env_id].kwargs["game"], num_envs=num_envs,
            repeat_action_probability=repeat_action_probability, frameskip=4, stack_num=1,
            img_height=210, img_width=160, grayscale=False, maxpool=False, noop_max=0,
            episodic_life=False, use_fire_reset=False, reward_clipping=False,
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        probe = gym.make(env_id)
        self.actions = np.array(up_down_actions(probe))
        probe.close()
        self.num_envs = num_envs
        self.single_action_space = gym.spaces.Discrete(2)
        self.action_space = gym.spaces.MultiDiscrete([2] * num_envs)
        self.single_observation_space = gym.spaces.Box(-1.0, 1.0, (6400,), np.float32)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (num_envs, 6400), np.float32)
        self.prev = None

    def _frames(self, obs):
        return obs.reshape(self.num_envs, 210, 160, 3)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.prev = karpathy_preprocess_batch(self._frames(obs))
        return np.zeros((self.num_envs, 6400), np.float32), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(self.actions[np.asarray(actions)])
        cur = karpathy_preprocess_batch(self._frames(obs))  # (N, 6400)
        diff = cur - self.prev
        done = terminated | truncated
        diff[done] = 0.0  # same-step autoreset: a new episode starts from a zero difference
        self.prev = cur
        return diff, reward.astype(np.float64), terminated, truncated, info

    def close(self):
        self.env.close()


# ----------------------------------------------------------------------------- DeepMind's preset

def ale_grayscale(rgb):
    """(210, 160, 3) uint8 -> (210, 160) uint8: ALE's getScreenGrayscale from the RGB screen
    (its luminance weights, rounded half up; checked equal on 119 colours of 12 games)."""
    f = rgb.astype(np.float64)
    lum = f[..., 0] * 0.2989 + f[..., 1] * 0.5870 + f[..., 2] * 0.1140  # (210, 160)
    return np.floor(lum + 0.5).astype(np.uint8)


def deepmind_frame(last, before=None, size=84):
    """AtariPreprocessing's observation of one agent step from RGB screens: max of its last two
    (just the last at reset), grayscale, resized with cv2 INTER_AREA. -> (size, size) uint8."""
    gray = ale_grayscale(last)
    if before is not None:
        np.maximum(gray, ale_grayscale(before), out=gray)
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)



class EpisodicLife(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Life loss ends the episode for the learner; the game itself resets only when it is over."""

    def __init__(self, env):
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over or kwargs.get("seed") is not None:  # a seed asks for a new game
            obs, info = self.env.reset(**kwargs)
        else:  # continue the same game after a lost life with one no-op step
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Press FIRE after reset in games that wait for it (Breakout), so the agent need not learn to."""

    def __init__(self, env):
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


def needs_fire(env):
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


# ----------------------------------------------------------------------------- factories

def make(game, preset=None, *, seed=None, render_mode=None, sticky=True, training=False, noop_max=30,
         recorder=None):
    """One env with a preset's preprocessing. Seeded once here when seed is given.

    recorder: an envs.recording.Recorder; it wraps the base ALE env, under every preset wrapper,
    so it logs the raw actions, rewards and screens that replay needs."""
    env_id = resolve(game)
    preset = preset or default_preset(env_id)
    spec = env_spec(env_id, preset, sticky, training, noop_max)
    if preset == "classic":
        if recorder is not None:
            raise ValueError(f"recordings are for Atari games, not {env_id}")
        env = gym.make(env_id, render_mode=render_mode)
    elif preset == "karpathy":
        env = gym.make(env_id, frameskip=4, repeat_action_probability=spec["repeat_action_probability"],
                       render_mode=render_mode)
        if recorder is not None:
            env = recorder.attach(env, spec)
        env = KarpathyPong(env)
    else:
        env = gym.make(env_id, frameskip=1, repeat_action_probability=spec["repeat_action_probability"],
                       render_mode=render_mode)
        if recorder is not None:
            env = recorder.attach(env, spec)
        if training:
            env = EpisodicLife(env)
            if needs_fire(env):
                env = FireReset(env)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=4, screen_size=84,
                                              grayscale_obs=True, scale_obs=False)
        if training:
            env = gym.wrappers.ClipReward(env, -1.0, 1.0)
        # zero padding: identical first stacks to ale-py's AtariVectorEnv (see FACTS.md)
        env = gym.wrappers.FrameStackObservation(env, FRAME_STACK, padding_type="zero")
    env.grok_spec = spec
    if seed is not None:
        env.reset(seed=int(seed))
        env.action_space.seed(int(seed))
    return env


def make_vector(game, preset=None, num_envs=1, *, seed=None, sticky=True, training=False,
                asynchronous=False, noop_max=30):
    """num_envs envs stepped as one, autoreset in same-step mode (the obs after a done is the new
    episode's first). Atari presets run on ale-py's C++ AtariVectorEnv (its threads step the
    emulators; measured faster than gymnasium's AsyncVectorEnv on 2 cores); classic-control tasks
    on gymnasium's vector envs (asynchronous=True asks for AsyncVectorEnv)."""
    env_id = resolve(game)
    preset = preset or default_preset(env_id)
    spec = env_spec(env_id, preset, sticky, training, noop_max)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if preset == "deepmind":
        venv = AtariVectorEnv(
            game=gym.registry[env_id].kwargs["game"], num_envs=num_envs,
            repeat_action_probability=spec["repeat_action_probability"], frameskip=4, stack_num=FRAME_STACK,
            img_height=84, img_width=84, grayscale=True, maxpool=True, noop_max=noop_max,
            episodic_life=training, use_fire_reset=training, reward_clipping=False,
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    elif preset == "karpathy" and not asynchronous:
        venv = KarpathyVector(env_id, num_envs, spec["repeat_action_probability"])
    else:
        fns = [lambda: make(env_id, preset, sticky=sticky, training=training, noop_max=noop_max)
               for _ in range(num_envs)]
        mode = gym.vector.AutoresetMode.SAME_STEP
        if asynchronous:
            venv = gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="fork")
        else:
            venv = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    venv.grok_spec = spec
    if seed is not None:
        venv.reset(seed=int(seed))
        venv.action_space.seed(int(seed))
    return venv


# ----------------------------------------------------------------------------- saving envs mid-episode

def vector_state(venv):
    """What a classic-control vector env needs to go on exactly where it is (JSON-able), or None when
    the env cannot be saved mid-episode (ale-py's AtariVectorEnv keeps its emulators in C++): a
    resumed run then starts new games. Per env: the physics state, the step counts and the RNG."""
    if not isinstance(venv, gym.vector.SyncVectorEnv):
        return None
    out = []
    for env in venv.envs:
        base = env.unwrapped
        if not hasattr(base, "state") or not hasattr(base, "steps_beyond_terminated"):
            return None
        limit = env
        while not isinstance(limit, gym.wrappers.TimeLimit) and hasattr(limit, "env"):
            limit = limit.env
        out.append({"state": None if base.state is None else np.asarray(base.state, np.float64).tolist(),
                    "steps_beyond_terminated": base.steps_beyond_terminated,
                    "elapsed_steps": getattr(limit, "_elapsed_steps", None),
                    "rng": base.np_random.bit_generator.state})
    return out


def restore_vector_state(venv, saved):
    """Put a vector env (reset once already) back into a state from vector_state; ValueError if it does not fit."""
    if not isinstance(venv, gym.vector.SyncVectorEnv) or not isinstance(saved, list) or len(saved) != venv.num_envs:
        raise ValueError("the saved env state does not fit this vector env")
    for env, s in zip(venv.envs, saved):
        base = env.unwrapped
        base.state = None if s["state"] is None else np.array(s["state"], np.float64)
        base.steps_beyond_terminated = s["steps_beyond_terminated"]
        base.np_random.bit_generator.state = s["rng"]
        limit = env
        while not isinstance(limit, gym.wrappers.TimeLimit) and hasattr(limit, "env"):
            limit = limit.env
        if isinstance(limit, gym.wrappers.TimeLimit):
            limit._elapsed_steps = s["elapsed_steps"]
