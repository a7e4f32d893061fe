"""envs/atari.py: the factory, its presets, the vector paths, and Karpathy's preprocessing."""
import re
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.atari import KarpathyPong, karpathy_preprocess, karpathy_preprocess_batch

PONG_MEANINGS = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]


# ----------------------------------------------------------------------------- names and specs

def test_unknown_game_is_one_line_with_close_names():
    with pytest.raises(envs.UnknownGameError) as e:
        envs.resolve("pongg")
    msg = str(e.value)
    assert "\n" not in msg and "'pongg'" in msg and "pong" in msg and "--list-games" in msg
    with pytest.raises(envs.UnknownGameError):
        envs.make("no_such_game_at_all")


@pytest.mark.parametrize("name, env_id", [("pong", "ALE/Pong-v5"), ("space_invaders", "ALE/SpaceInvaders-v5"),
                                          ("ALE/Breakout-v5", "ALE/Breakout-v5"), ("Pong", "ALE/Pong-v5"),
                                          ("CartPole-v1", "CartPole-v1")])
def test_resolve_short_names_and_ids(name, env_id):
    assert envs.resolve(name) == env_id


def test_env_spec_records_protocol_and_preprocessing():
    spec = envs.env_spec("breakout", "deepmind", sticky=False, training=True, noop_max=0)
    assert spec["protocol"] == "v4-nosticky" and spec["repeat_action_probability"] == 0.0
    assert spec["noop_max"] == 0 and spec["training_wrappers"] is True and spec["frame_stack"] == 4
    assert envs.env_spec("pong", "karpathy")["protocol"] == "v5-sticky"
    assert envs.make("pong", "deepmind", noop_max=0).grok_spec["noop_max"] == 0
    with pytest.raises(ValueError, match="classic"):
        envs.env_spec("pong", "classic")


# ----------------------------------------------------------------------------- gymnasium's checker

# Gymnasium's checker reports many failures as warnings (an observation outside its space, a wrong dtype,
# a reset that ignores its seed...), so every warning fails the check except these, which are known and
# harmless here:
HARMLESS_CHECKER_WARNINGS = [
    # check_env asks for the raw env; the wrapped env is exactly what the agents see, so that is what we
    # check (it recreates it from env.spec, which our wrappers support)
    r"is different from the unwrapped version",
    # CartPole-v1's own observation space (Gymnasium's) is unbounded in two of its four dimensions
    r"A Box observation space (minimum|maximum) value is -?infinity",
]


def check_env_strictly(env):
    """check_env; AssertionError listing every warning it raised beyond HARMLESS_CHECKER_WARNINGS."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    bad = [str(w.message) for w in caught
           if not any(re.search(pattern, str(w.message)) for pattern in HARMLESS_CHECKER_WARNINGS)]
    assert not bad, bad


@pytest.mark.parametrize("game, preset, training", [("pong", "karpathy", False), ("breakout", "deepmind", False),
                                                    ("breakout", "deepmind", True),
                                                    ("CartPole-v1", "classic", False)])
def test_check_env_on_presets(game, preset, training):
    env = envs.make(game, preset, training=training)
    check_env_strictly(env)
    env.close()


class UnseededNoise(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Observations jittered by a generator that reset(seed=...) does not seed: the same seed no longer
    gives the same game, a failure check_env reports only as a warning when the values stay close."""

    def __init__(self, env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        self.jitter = np.random.default_rng()

    def observation(self, obs):
        return (obs + self.jitter.uniform(-1e-6, 1e-6, obs.shape)).astype(obs.dtype)


def test_check_env_strictly_fails_on_a_warned_failure():
    check_env_strictly(gym.make("CartPole-v1"))
    with pytest.raises(AssertionError, match="not equal although similar"):
        check_env_strictly(UnseededNoise(gym.make("CartPole-v1")))


# ----------------------------------------------------------------------------- shapes and dtypes

@pytest.mark.parametrize("game, preset, training, obs_shape, obs_dtype, n_actions", [
    ("pong", "karpathy", False, (6400,), np.float32, 2),
    ("pong", "deepmind", False, (4, 84, 84), np.uint8, 6),
    ("breakout", "deepmind", True, (4, 84, 84), np.uint8, 4),
    ("CartPole-v1", "classic", False, (4,), np.float32, 2),
])
def test_single_env_shapes_and_dtypes(game, preset, training, obs_shape, obs_dtype, n_actions):
    env = envs.make(game, preset, seed=0, training=training)
    assert env.observation_space.shape == obs_shape and env.action_space.n == n_actions
    obs, info = env.reset(seed=1)
    assert obs.shape == obs_shape and obs.dtype == obs_dtype and isinstance(info, dict)
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs.shape == obs_shape and obs.dtype == obs_dtype and obs in env.observation_space
        assert np.isscalar(reward) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert env.grok_spec["preset"] == preset
    env.close()


@pytest.mark.parametrize("game, preset, obs_shape, obs_dtype", [
    ("pong", "karpathy", (6400,), np.float32),
    ("pong", "deepmind", (4, 84, 84), np.uint8),
    ("CartPole-v1", "classic", (4,), np.float32),
])
def test_vector_env_shapes_and_dtypes(game, preset, obs_shape, obs_dtype):
    venv = envs.make_vector(game, preset, 2, seed=0)
    assert venv.single_observation_space.shape == obs_shape and venv.num_envs == 2
    obs, _ = venv.reset(seed=2)
    assert obs.shape == (2, *obs_shape) and obs.dtype == obs_dtype
    obs, reward, terminated, truncated, _ = venv.step(venv.action_space.sample())
    assert obs.shape == (2, *obs_shape) and obs.dtype == obs_dtype
    assert reward.shape == terminated.shape == truncated.shape == (2,) and terminated.dtype == bool
    assert venv.grok_spec["preset"] == preset
    venv.close()


def test_make_vector_rejects_zero_envs():
    with pytest.raises(ValueError, match="num_envs"):
        envs.make_vector("pong", "karpathy", 0)


# ----------------------------------------------------------------------------- Karpathy's preprocessing

def synthetic_pong_frame():
    """A 210x160x3 frame: Pong's background (144, 72, 17) with a 109 strip, a paddle, a ball, a score."""
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[:, :] = (144, 72, 17)                  # playfield background
    frame[34:36, :] = (109, 118, 43)             # the other background colour (the top wall band)
    frame[0:20, 20:40] = (213, 130, 74)          # a score digit: cropped away (rows < 35)
    frame[100:116, 140:144] = (92, 186, 92)      # the player's paddle
    frame[60:62, 80:82] = (236, 236, 236)        # the ball
    return frame


def karpathy_slow(frame):
    """The slow twin, pixel by pixel as in Karpathy's post."""
    out = np.zeros((80, 80), np.float32)
    for r in range(80):
        for c in range(80):
            v = frame[35 + 2 * r, 2 * c, 0]
            out[r, c] = 0.0 if v in (144, 109, 0) else 1.0
    return out.ravel()


def test_karpathy_preprocess_on_a_known_frame():
    frame = synthetic_pong_frame()
    x = karpathy_preprocess(frame)
    assert x.shape == (6400,) and x.dtype == np.float32
    img = x.reshape(80, 80)
    expected = np.zeros((80, 80), np.float32)
    expected[33:41, 70:72] = 1  # paddle: sampled rows 101, 103, ..., 115 -> 33..40; cols 140, 142 -> 70, 71
    expected[13, 40] = 1        # ball: sampled row 61 -> 13, col 80 -> 40
    assert np.array_equal(img, expected)
    assert np.array_equal(x, karpathy_slow(frame))
    batch = np.stack([frame, np.full_like(frame, 144)])  # (2, 210, 160, 3)
    assert np.array_equal(karpathy_preprocess_batch(batch), np.stack([x, np.zeros(6400, np.float32)]))


class FakePong(gym.Env):
    """Replays fixed frames and logs the actions it was given, to test the wrapper alone."""
    observation_space = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
    action_space = gym.spaces.Discrete(6)

    def __init__(self, frames):
        self.frames, self.t, self.log = frames, 0, []

    def get_action_meanings(self):
        return PONG_MEANINGS

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.frames[0], {}

    def step(self, action):
        self.log.append(action)
        self.t += 1
        return self.frames[self.t], 0.0, False, False, {}


def test_karpathy_wrapper_feeds_frame_differences_and_maps_actions():
    first = synthetic_pong_frame()
    second = first.copy()
    second[60:62, 80:82] = (144, 72, 17)   # the ball moved ...
    second[70:72, 90:92] = (236, 236, 236)  # ... here
    env = KarpathyPong(FakePong([first, second]))
    obs, _ = env.reset()
    assert np.array_equal(obs, np.zeros(6400, np.float32))
    obs, *_ = env.step(1)
    assert np.array_equal(obs, karpathy_preprocess(second) - karpathy_preprocess(first))
    assert (obs == 1).sum() == 1 and (obs == -1).sum() == 1 and obs[40 + 80 * 13] == -1  # ball left here
    assert env.unwrapped.log == [3]  # karpathy action 1 ("down") is Pong's LEFT
    assert env.actions == (2, 3)


# ----------------------------------------------------------------------------- one env vs the vector path

def run_actions(env, actions, seed, vector):
    obs, _ = env.reset(seed=seed)
    seen, rewards = [obs[0] if vector else obs], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(np.array([a]) if vector else int(a))
        done = terminated[0] | truncated[0] if vector else terminated or truncated
        assert not done, "the episode ended inside the compared window: shorten it"
        seen.append(obs[0] if vector else obs)
        rewards.append(float(reward[0]) if vector else float(reward))
    return np.stack(seen), np.array(rewards)


@pytest.mark.parametrize("preset, n_actions, steps", [("karpathy", 2, 300), ("deepmind", 6, 300)])
def test_single_and_vector_paths_see_the_same_observations(preset, n_actions, steps):
    # sticky off; deepmind with noop_max=0 and zero padding (FACTS.md: identical until the episode ends)
    actions = np.random.default_rng(4).integers(n_actions, size=steps)
    single = envs.make("pong", preset, sticky=False, noop_max=0)
    vector = envs.make_vector("pong", preset, 1, sticky=False, noop_max=0)
    obs_s, rew_s = run_actions(single, actions, 11, vector=False)
    obs_v, rew_v = run_actions(vector, actions, 11, vector=True)
    single.close()
    vector.close()
    assert obs_s.dtype == obs_v.dtype and np.array_equal(obs_s, obs_v)
    assert np.array_equal(rew_s, rew_v)
    assert np.abs(obs_s[1:]).sum() > 0  # the game moved: not a comparison of blank screens


def test_same_seed_same_game_with_sticky_actions():
    actions = np.random.default_rng(5).integers(2, size=150)
    runs = []
    for _ in range(2):
        env = envs.make("pong", "karpathy", sticky=True)
        runs.append(run_actions(env, actions, 3, vector=False)[0])
        env.close()
    assert np.array_equal(runs[0], runs[1])


class CountingEnv(gym.Wrapper):
    """Counts steps and resets, and refuses a step after an episode ended without a reset."""

    def __init__(self, env, log):
        super().__init__(env)
        self.log, self.done = log, True
        log.setdefault("steps", 0)
        log.setdefault("resets", 0)

    def reset(self, **kwargs):
        self.log["resets"] += 1
        self.done = False
        return self.env.reset(**kwargs)

    def step(self, action):
        assert not self.done, "stepped after the episode ended, without a reset"
        self.log["steps"] += 1
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.done = terminated or truncated
        return obs, reward, terminated, truncated, info


def test_bench_envs_rates_are_the_steps_taken_over_the_time_taken():
    """A rate is agent steps (a vector step of N envs counts N) over the seconds they took: the timed
    steps divided by the rate must give back at least the requested time, and not much more."""
    from scripts import bench_envs
    seconds = 0.3
    log = {}
    start = time.perf_counter()
    rate = bench_envs.time_single(CountingEnv(gym.make("CartPole-v1"), log), seconds, np.random.default_rng(0))
    took = time.perf_counter() - start
    timed = log["steps"] - 50  # the first 50 are the untimed warm-up
    assert seconds <= timed / rate <= took, (timed, rate, took)
    assert log["resets"] > 10  # random CartPole ends within about 20 steps: every end was reset
    log = {}
    venv = gym.vector.SyncVectorEnv([lambda: CountingEnv(gym.make("CartPole-v1"), log)] * 4,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    start = time.perf_counter()
    rate = bench_envs.time_vector(venv, seconds, np.random.default_rng(0))
    took = time.perf_counter() - start
    timed = log["steps"] - 10 * 4  # 10 untimed warm-up steps of 4 envs
    assert seconds <= timed / rate <= took, (timed, rate, took)
    names = [name for name, _, _ in bench_envs.cases()]
    assert names[0] == "raw ALE/Pong-v5" and "make_vector deepmind pong x8" in names and len(names) == 13
