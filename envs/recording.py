"""Recorded games: one .npz per game that replays frame for frame, checked by a CRC32 per screen.

A Recorder attaches a small gym.Wrapper right above the base ALE env, under every preset wrapper
(`envs.make(game, preset, recorder=rec)` puts it there), so it logs what the emulator itself was given
and showed: the raw action index of each base step (karpathy's "up" arrives as ALE action 2, RIGHT;
the deepmind preset's frames, no-op starts and training FIRE presses are base steps too), the raw
unclipped reward and the RGB screen after reset and after every step. So replay needs no preset: it
makes the base env with the recorded id and kwargs, resets it with the recorded seed and steps the
recorded actions; sticky actions come from the ALE's own RNG, which the seed repeats. Every game is
seeded (a reset without a seed gets one drawn from the first seed seen), so each game replays alone.
Only single envs are recorded: make_vector's emulators step inside ale-py's C++ AtariVectorEnv.
Step numbers in messages count base steps: step i is the screen after the i-th action.
"""
import math
import os
import zlib

import ale_py
import gymnasium as gym
import imageio_ffmpeg
import numpy as np
from PIL import Image

from envs.atari import is_atari, make
from envs.recording_format import (SCREEN_SHAPE, Recording, RecordingError, mismatch, read_recording,
                                   write_recording)

# The file (envs/recording_format.py): a JSON header with format, version, env_id, env_kwargs (every
# gym.make kwarg but render_mode), preset, spec (envs.env_spec of the wrapped env, or null), protocol,
# sticky, repeat_action_probability, seed, player ("human" or a checkpoint name), length (base steps),
# return, ended_at (the first step that terminated or truncated, or null), end ("terminated",
# "truncated" or null), frames, frame_shape, versions, data_crc32 and created (UTC); the arrays
# actions (L,) uint8 and rewards (L,) float64 of each base step, screen_crc32 (L+1,) uint32, and with
# frames=True frames_zlib (bytes,) uint8: one zlib stream of every screen XOR the one before (the
# first against zeros), about 160 bytes a frame.
FORMAT = "grok-arcade-recording"
VERSION = 1
ARRAY_DTYPES = {"actions": np.uint8, "rewards": np.float64, "screen_crc32": np.uint32,
                "frames_zlib": np.uint8}
PACKAGES = ("ale_py", "gymnasium", "grok_arcade")  # whose versions a recording keeps


# ----------------------------------------------------------------------------- recording

class Recorder:
    """Collects one game at the base ALE env and saves it with save(path).

        rec = Recorder(player="checkpoints/pong-pg.npz")
        env = envs.make("pong", "karpathy", recorder=rec)
        ... env.reset(seed=...), env.step(...) until the game ends ...
        rec.save("game.npz")

    A reset starts a new game and drops the one before: save each game before the next reset."""

    def __init__(self, player="human", frames=False):
        self.player = str(player)   # who played: "human" or a checkpoint name
        self.frames = bool(frames)  # also store every screen, compressed
        self.env = None             # the base env once attached
        self.spec = None            # envs.env_spec of the env this recorder sits in
        self._seeds = None          # draws the seed of every game reset without one
        self.seed = None
        self._clear()

    def attach(self, env, spec=None):
        """Wrap the base ALE env (as gym.make returns it); envs.make(recorder=...) calls this."""
        if not is_atari(env.spec.id if env.spec else ""):
            raise RecordingError("recordings are for ALE games made with gym.make('ALE/...')")
        if self.env is not None:
            raise RecordingError("this Recorder is already attached to an env; make one per env")
        self.env, self.spec = env, spec
        return _RecordingWrapper(env, self)

    def _clear(self):
        self.actions, self.rewards, self.crcs = [], [], []
        self.ended_at, self.end = None, None
        self._zip = zlib.compressobj(6) if self.frames else None
        self._chunks, self._prev = [], None

    def _game_seed(self, seed):
        if seed is not None:
            self._seeds = np.random.default_rng(int(seed))
            return int(seed)
        if self._seeds is None:
            self._seeds = np.random.default_rng()
        return int(self._seeds.integers(0, 2**31 - 1))

    def _screen(self, screen):
        self.crcs.append(zlib.crc32(screen))
        if self.frames:
            delta = screen if self._prev is None else np.bitwise_xor(screen, self._prev)  # (210, 160, 3)
            self._chunks.append(self._zip.compress(delta.tobytes()))
            self._prev = screen.copy()

    def _start(self, seed, screen):
        self._clear()
        self.seed = seed
        self._screen(screen)

    def _step(self, action, reward, screen, terminated, truncated):
        self.actions.append(action)
        self.rewards.append(reward)
        self._screen(screen)
        if self.ended_at is None and (terminated or truncated):
            self.ended_at = len(self.actions)
            self.end = "terminated" if terminated else "truncated"

    @property
    def length(self):
        return len(self.actions)

    def save(self, path):
        """Write the current game (finished or not) to path; return its header."""
        if not self.crcs:
            raise RecordingError("nothing to save: the recorded env was never reset")
        kwargs = dict(self.env.spec.kwargs)
        kwargs.pop("render_mode", None)  # how it was shown changes nothing in the emulator
        rap = float(kwargs.get("repeat_action_probability", 0.25))
        # A Ctrl-C can land between the appends of one step: keep only whole steps.
        n = min(len(self.actions), len(self.rewards), len(self.crcs) - 1)
        arrays = {"actions": np.asarray(self.actions[:n], np.uint8),      # (L,)
                  "rewards": np.asarray(self.rewards[:n], np.float64),    # (L,)
                  "screen_crc32": np.asarray(self.crcs[:n + 1], np.uint32)}   # (L+1,)
        header = {
            "format": FORMAT, "version": VERSION,
            "env_id": self.env.spec.id, "env_kwargs": kwargs,
            "preset": self.spec.get("preset") if self.spec else None, "spec": self.spec,
            "protocol": self.spec.get("protocol") if self.spec else ("v5-sticky" if rap > 0 else "v4-nosticky"),
            "sticky": rap > 0, "repeat_action_probability": rap, "seed": self.seed, "player": self.player,
            "length": n, "return": float(np.sum(arrays["rewards"])),
            "ended_at": self.ended_at if self.ended_at is not None and self.ended_at <= n else None,
            "end": self.end if self.ended_at is not None and self.ended_at <= n else None,
            "frames": self.frames, "frame_shape": list(SCREEN_SHAPE),
        }
        if self.frames:  # copy() so the game can go on after a save
            blob = b"".join(self._chunks) + self._zip.copy().flush()
            arrays["frames_zlib"] = np.frombuffer(blob, np.uint8)  # (bytes,)
        return write_recording(path, arrays, header, PACKAGES)


class _RecordingWrapper(gym.Wrapper):
    """Logs every raw action, reward and screen of the base env into its Recorder."""

    def __init__(self, env, recorder):
        super().__init__(env)
        self.recorder = recorder

    def _screen(self, obs):
        if isinstance(obs, np.ndarray) and obs.shape == SCREEN_SHAPE:  # obs_type="rgb": the screen itself
            return obs
        return self.env.unwrapped.ale.getScreenRGB()

    def reset(self, *, seed=None, options=None):
        seed = self.recorder._game_seed(seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self.recorder._start(seed, self._screen(obs))
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.recorder._step(int(action), float(reward), self._screen(obs), terminated, truncated)
        return obs, reward, terminated, truncated, info


def record(game, act, path, *, preset=None, seed=0, player="human", frames=False, max_steps=None,
           sticky=True, noop_max=30):
    """Play one whole game with act(obs) -> action (agent steps) and save it; return the header."""
    recorder = Recorder(player=player, frames=frames)
    env = make(game, preset, sticky=sticky, noop_max=noop_max, recorder=recorder)
    try:
        obs, _ = env.reset(seed=int(seed))
        steps = 0
        while True:
            obs, _, terminated, truncated, _ = env.step(act(obs))
            steps += 1
            if terminated or truncated or (max_steps is not None and steps >= max_steps):
                break
        return recorder.save(path)
    finally:
        env.close()


def load(path):
    """Read and check a recording; RecordingError with a one-line message if anything is off."""
    fields = {"env_id": str, "env_kwargs": dict, "seed": int, "length": int, "player": str, "frames": bool,
              "return": (int, float), "data_crc32": int}

    def shapes(h):
        n = h["length"]
        frames = {"frames_zlib": None} if h["frames"] else {}  # None: any length
        return {"actions": (n,), "rewards": (n,), "screen_crc32": (n + 1,), **frames}

    arrays, h = read_recording(path, FORMAT, VERSION, "grok-arcade", fields, shapes, ARRAY_DTYPES)
    if not np.isclose(float(np.sum(arrays["rewards"])), h["return"]):
        raise RecordingError(f"{path}: header return {h['return']} is not the sum of the rewards")
    return Recording(os.fspath(path), h, arrays["actions"], arrays["rewards"], arrays["screen_crc32"],
                     arrays.get("frames_zlib"))


# ----------------------------------------------------------------------------- replaying

def replay(path, frames=False):
    """Yield (rgb_frame, action, reward): first (screen after reset, None, 0.0), then one per step.

    frames=False re-simulates on the emulator; frames=True reads the stored screens (no emulator).
    Either way every screen is checked against its recorded CRC32; a mismatch raises RecordingError
    naming the step. The file is loaded and checked now; the game plays as you iterate."""
    rec = load(path)
    if frames:
        if rec.frames_zlib is None:
            raise RecordingError(f"{rec.path}: recorded without frames; use replay(path) to re-simulate")
        return _replay_stored(rec)
    return _replay_emulator(rec, _base_env(rec))


def _base_env(rec):
    h = rec.header
    env_id, kwargs = h["env_id"], dict(h["env_kwargs"])
    spec = gym.registry.get(env_id)
    if spec is None or not is_atari(env_id):
        raise RecordingError(f"{rec.path}: recorded env {env_id!r} is not an ALE game registered here")
    if kwargs.get("game", spec.kwargs.get("game")) != spec.kwargs.get("game"):
        raise RecordingError(f"{rec.path}: env_kwargs say game {kwargs.get('game')!r} but env_id is {env_id}")
    kwargs.pop("render_mode", None)
    try:
        return gym.make(env_id, **kwargs)
    except Exception as e:  # an unknown kwarg from another ale-py version
        raise RecordingError(f"{rec.path}: cannot make {env_id} with the recorded kwargs ({e})") from None


def _mismatch(rec, step, got, want):
    return mismatch(rec, step, got, want, "ale_py", ale_py.__version__)


def _replay_emulator(rec, env):
    crcs, n_actions = rec.screen_crc32, env.action_space.n
    ended_at = rec.header.get("ended_at")
    try:
        obs, _ = env.reset(seed=rec.header["seed"])
        screen = obs if obs.shape == SCREEN_SHAPE else env.unwrapped.ale.getScreenRGB()
        if zlib.crc32(screen) != crcs[0]:
            raise _mismatch(rec, 0, zlib.crc32(screen), crcs[0])
        yield screen, None, 0.0
        ended = False
        for i, (action, want_reward) in enumerate(zip(rec.actions.tolist(), rec.rewards.tolist()), 1):
            if action >= n_actions:
                raise RecordingError(f"{rec.path}: step {i}: action {action} is not one of "
                                     f"{rec.header['env_id']}'s {n_actions} actions")
            obs, reward, terminated, truncated, _ = env.step(action)
            screen = obs if obs.shape == SCREEN_SHAPE else env.unwrapped.ale.getScreenRGB()
            crc = zlib.crc32(screen)
            if crc != crcs[i]:
                raise _mismatch(rec, i, crc, crcs[i])
            if float(reward) != want_reward:
                raise RecordingError(f"{rec.path}: replay diverged at step {i}: reward {reward}, "
                                     f"recorded {want_reward}")
            if (terminated or truncated) and not ended:
                ended = True
                if ended_at != i:
                    raise RecordingError(f"{rec.path}: replay diverged at step {i}: the game ended "
                                         f"there, the recording says {ended_at}")
            yield screen, action, float(reward)
        if ended_at is not None and not ended:
            raise RecordingError(f"{rec.path}: replay diverged at step {ended_at}: the recorded game "
                                 f"ended there, the replay did not")
    finally:
        env.close()


def _replay_stored(rec):
    steps = zip([None] + rec.actions.tolist(), [0.0] + rec.rewards.tolist())
    for i, (screen, (action, reward)) in enumerate(zip(rec.frames(), steps)):
        crc = zlib.crc32(screen)
        if crc != rec.screen_crc32[i]:
            raise _mismatch(rec, i, crc, rec.screen_crc32[i])
        yield screen, action, reward


# ----------------------------------------------------------------------------- export

GIF_MIN_DELAY = 2  # hundredths of a second: browsers show a GIF frame of less than 2 for 10


def gif_timing(fps, count):
    """(keep, delays) for a GIF of `count` frames shown at `fps`: keep every keep-th frame, and hold the
    kept ones for `delays` hundredths of a second each. GIF stores whole hundredths and browsers slow
    frames under GIF_MIN_DELAY to 10: so at 60 frames a second (the deepmind preset's recordings hold
    every emulator frame) every 2nd frame is kept, and the delays are rounded cumulatively (3, 4, 3,
    ...) so the GIF lasts the game's real time, count / fps seconds."""
    keep = max(1, math.ceil(GIF_MIN_DELAY * fps / 100.0 - 1e-9))
    kept = -(-count // keep)
    ends = [min((j + 1) * keep, count) for j in range(kept)]  # the source frame each kept one lasts until
    stamps = [0] + [round(100.0 * end / fps) for end in ends]
    return keep, [max(GIF_MIN_DELAY, b - a) for a, b in zip(stamps, stamps[1:])]


def export(path, out_path, fps=None, every=1, scale=1):
    """Write the game as .mp4 (imageio-ffmpeg) or .gif (Pillow); return the frame count written.

    fps defaults to real time (60 / frameskip); every=n keeps every n-th screen (and divides the
    default fps by n), scale=k enlarges each pixel to k x k. A GIF keeps the real-time duration with
    the delays GIF can hold (gif_timing). Uses the stored frames when there are."""
    out_path = os.fspath(out_path)
    suffix = os.path.splitext(out_path)[1].lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"export writes .mp4 or .gif, not {suffix or out_path!r}")
    if int(every) < 1 or int(scale) < 1:
        raise ValueError(f"every and scale must be >= 1, got every={every}, scale={scale}")
    rec = load(path)
    frameskip = rec.header["env_kwargs"].get("frameskip", 4)
    fps = float(fps) if fps else 60.0 / (frameskip if isinstance(frameskip, int) else 4) / every
    count = -(-(len(rec.actions) + 1) // every)  # screens after the `every` cut
    delays = None
    if suffix == ".gif":
        keep, delays = gif_timing(fps, count)
        every *= keep
    with open(out_path, "wb"):  # an unwritable target fails here, as an OSError, before any work
        pass
    frames = replay(path, frames=rec.frames_zlib is not None)
    frames = (f for i, (f, _, _) in enumerate(frames) if i % every == 0)
    if scale > 1:
        frames = (f.repeat(scale, axis=0).repeat(scale, axis=1) for f in frames)  # (210k, 160k, 3)
    if suffix == ".mp4":
        return _write_mp4(frames, out_path, fps, scale)
    return _write_gif(frames, out_path, delays)


def _write_mp4(frames, out_path, fps, scale):
    height, width = SCREEN_SHAPE[0] * scale, SCREEN_SHAPE[1] * scale
    writer = imageio_ffmpeg.write_frames(out_path, (width, height), fps=fps, macro_block_size=1,
                                         ffmpeg_log_level="error")
    writer.send(None)
    count = 0
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
            count += 1
    finally:
        writer.close()
    return count


def _write_gif(frames, out_path, delays):
    """Pillow's GIF writer with one delay per frame (hundredths of a second; Pillow takes milliseconds
    and merges repeated frames, adding up their delays)."""
    count = 0

    def images():
        nonlocal count
        for frame in frames:
            count += 1
            yield Image.fromarray(frame)

    stream = images()
    first = next(stream)
    first.save(out_path, format="GIF", save_all=True, append_images=stream, loop=0,
               duration=[10 * d for d in delays])
    return count
