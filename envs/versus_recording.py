"""Recorded two-player games: one .npz per game of envs.versus.VersusPong, replayed and checked by a
CRC32 per screen, in the file format of envs/recording_format.py.

A VersusRecorder given to VersusPong(recorder=...) logs both players' actions as they chose them (auto
serve adds FIRE inside the env, so replay repeats it), both rewards, and the screen after reset and
after every step. Replay rebuilds VersusPong with the recorded settings, resets it with the recorded
seed and no-op frames, and steps the recorded actions. scripts.replay tells the two formats apart by
the header's format field (is_versus).
"""
import os
import zlib

import numpy as np

from envs import versus
from envs.recording_format import Recording, RecordingError, mismatch, read_header, read_recording, write_recording
from nets.npzfile import versions

# The file: a JSON header with format, version, game ("pong"), env_kwargs (VersusPong's frameskip,
# auto_serve), sides {left: "second_0", right: "first_0"}, players {left, right} ("human" or a
# checkpoint name), player (both, for listings), seed, noop_frames, length (steps), points {left,
# right}, ended_at, end ("terminated", "truncated" or null), frames (false: no screens are stored),
# versions, data_crc32, created; the arrays actions (L, 2) uint8 [left, right] (envs.versus.
# ACTION_MEANINGS), rewards (L, 2) float64 and screen_crc32 (L+1,) uint32.
FORMAT = "grok-arcade-versus-recording"
VERSION = 1
ARRAYS = {"actions": np.uint8, "rewards": np.float64, "screen_crc32": np.uint32}
PACKAGES = ("ale_py", "pettingzoo", "multi_agent_ale_py", "gymnasium", "grok_arcade")  # versions kept


class VersusRecorder:
    """Collects one game of a VersusPong; save(path) writes it. A reset drops the game before."""

    def __init__(self, left="human", right="human"):
        self.players = {"left": str(left), "right": str(right)}
        self.env = None
        self._clear()

    def _clear(self):
        self.actions, self.rewards, self.crcs = [], [], []
        self.ended_at, self.end = None, None

    def _start(self, env):
        self._clear()
        self.env = env
        self.crcs.append(zlib.crc32(env.rgb))

    def _step(self, actions, rewards, screen, terminated, truncated):
        self.actions.append(actions)
        self.rewards.append(rewards)
        self.crcs.append(zlib.crc32(screen))
        if self.ended_at is None and (terminated or truncated):
            self.ended_at, self.end = len(self.actions), "terminated" if terminated else "truncated"

    @property
    def length(self):
        return len(self.actions)

    def save(self, path):
        """Write the current game (finished or not) to path; return its header."""
        if self.env is None:
            raise RecordingError("nothing to save: the recorded env was never reset")
        arrays = {"actions": np.asarray(self.actions, np.uint8).reshape(-1, 2),      # (L, 2)
                  "rewards": np.asarray(self.rewards, np.float64).reshape(-1, 2),    # (L, 2)
                  "screen_crc32": np.asarray(self.crcs, np.uint32)}                  # (L+1,)
        header = {
            "format": FORMAT, "version": VERSION, "game": "pong", "env_kwargs": self.env.kwargs,
            "sides": dict(versus.AGENT_IDS), "players": dict(self.players),
            "player": f"{self.players['left']} (left) vs {self.players['right']} (right)",
            "seed": self.env.seed, "noop_frames": self.env.noop_frames, "length": self.length,
            "points": points(arrays["rewards"]), "ended_at": self.ended_at, "end": self.end, "frames": False,
        }
        return write_recording(path, arrays, header, PACKAGES)


def points(rewards):
    """{left, right}: points each side scored (its +1 rewards; a missed-serve -1 is no point)."""
    r = np.asarray(rewards, np.float64).reshape(-1, 2)  # (L, 2)
    return {"left": int((r[:, 0] > 0).sum()), "right": int((r[:, 1] > 0).sum())}


# ----------------------------------------------------------------------------- reading

class VersusRecording(Recording):
    """A loaded two-player recording: actions and rewards (L, 2), no stored screens."""

    SUMMARY = ("game", "players", "seed", "noop_frames", "length", "points", "end", "created", "versions")

    def summary(self):
        return {"format": FORMAT, **super().summary()}


def is_versus(path):
    """True when path's header says it is a two-player recording. Reads the header alone (a
    single-player recording with frames can be large); anything unreadable is False, and the
    single-player reader then says what is wrong with it."""
    try:
        return read_header(path).get("format") == FORMAT
    except RecordingError:  # not a zip, no header, damaged, not JSON: not ours
        return False


def load(path):
    """Read and check a two-player recording; RecordingError with one line if anything is off."""
    fields = {"env_kwargs": dict, "players": dict, "seed": int, "noop_frames": int, "length": int, "points": dict,
              "data_crc32": int}

    def shapes(h):
        n = h["length"]
        return {"actions": (n, 2), "rewards": (n, 2), "screen_crc32": (n + 1,)}

    arrays, h = read_recording(path, FORMAT, VERSION, "two-player", fields, shapes, ARRAYS)
    if set(h["env_kwargs"]) != {"frameskip", "auto_serve"}:
        raise RecordingError(f"{path}: env_kwargs {sorted(h['env_kwargs'])} are not VersusPong's")
    if int(arrays["actions"].max(initial=0)) >= len(versus.ACTION_MEANINGS):
        raise RecordingError(f"{path}: an action is not one of Pong's {len(versus.ACTION_MEANINGS)}")
    if points(arrays["rewards"]) != h["points"]:
        raise RecordingError(f"{path}: header points {h['points']} do not match the rewards")
    return VersusRecording(os.fspath(path), h, arrays["actions"], arrays["rewards"], arrays["screen_crc32"])


# ----------------------------------------------------------------------------- replaying

def replay(path, frames=False):
    """Yield (rgb_screen, actions, rewards): first (screen after reset, None, (0, 0)), then one per step.

    Every screen is checked against its CRC32, every reward and the game's end against the
    recording; a mismatch raises RecordingError naming the step. The file is loaded and the env
    made now (RecordingError with the install hint without the versus extra); the game plays as
    you iterate. frames=True is refused: two-player recordings keep no screens."""
    rec = load(path)
    if frames:
        raise RecordingError(f"{rec.path}: two-player recordings keep no screens; replay(path) re-simulates")
    try:
        env = versus.VersusPong(**rec.header["env_kwargs"])
    except versus.VersusUnavailable as e:
        raise RecordingError(f"{rec.path}: {e}") from None
    return _replay(rec, env)


def _mismatch(rec, step, got, want):
    here = versions("multi_agent_ale_py")["multi_agent_ale_py"]
    return mismatch(rec, step, got, want, "multi_agent_ale_py", here, after="step")


def _replay(rec, env):
    crcs, ended_at = rec.screen_crc32, rec.header.get("ended_at")
    terminated_at = ended_at if rec.header.get("end") == "terminated" else None
    try:
        screen = env.reset(rec.header["seed"], rec.header["noop_frames"])
        if zlib.crc32(screen) != crcs[0]:
            raise _mismatch(rec, 0, zlib.crc32(screen), crcs[0])
        yield screen, None, np.zeros(2)
        for i, (actions, want) in enumerate(zip(rec.actions.tolist(), rec.rewards), 1):
            if env.over:
                raise RecordingError(f"{rec.path}: replay diverged at step {i}: the game ended at step "
                                     f"{i - 1}, the recording goes on")
            rewards, terminated, _ = env.step(*actions)
            crc = zlib.crc32(env.rgb)
            if crc != crcs[i]:
                raise _mismatch(rec, i, crc, crcs[i])
            if not np.array_equal(rewards, want):
                raise RecordingError(f"{rec.path}: replay diverged at step {i}: rewards {rewards.tolist()}, "
                                     f"recorded {want.tolist()}")
            if terminated and terminated_at != i:
                raise RecordingError(f"{rec.path}: replay diverged at step {i}: the game ended there, "
                                     f"the recording says {terminated_at}")
            yield env.rgb, np.asarray(actions), rewards
        if terminated_at is not None and not env.over:
            raise RecordingError(f"{rec.path}: replay diverged at step {terminated_at}: the recorded game "
                                 f"ended there, the replay did not")
    finally:
        env.close()
