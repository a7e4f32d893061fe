"""Two-player Pong: PettingZoo's Atari Pong (multi-agent-ale-py) with the ROM that ale-py ships.

Optional: needs the versus extra (`pip install -e ".[versus]"`); importing this module does not,
only VersusPong does, and it raises VersusUnavailable (an ImportError) with that hint. PettingZoo's
ROM search is pointed at ale-py's own roms folder: nothing is downloaded, AutoROM is never called.

Sides. "right" is PettingZoo's first_0, the green paddle: the one single-player Pong gives the agent.
"left" is second_0, the orange paddle the built-in AI plays there. On both sides action 2 (RIGHT)
moves the paddle up and 3 (LEFT) down, as in single-player Pong's minimal set (measured). A left-side
agent sees the screen mirrored (see the mirroring section), so it plays as if it were on the right.

Steps. One step is `frameskip` (4) emulator frames with both players' actions held, rewards summed
per side: single-player Pong-v5's pace, 15 steps a second. After each step the env keeps the last
RGB screen (`rgb`) and AtariPreprocessing's max-pool pair (`gray_pool`), from which each side's view
builds its input.
"""
import os

import ale_py
import cv2
import numpy as np

from envs.atari import karpathy_preprocess

SIDES = ("left", "right")
AGENT_IDS = {"left": "second_0", "right": "first_0"}  # PettingZoo's names
ACTION_MEANINGS = ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")  # Pong's minimal set
WITH_FIRE = np.array([1, 1, 4, 5, 4, 5])  # each action with FIRE pressed too
PADDLE_RGB = {"right": (92, 186, 92), "left": (213, 130, 74)}
PADDLE_GRAY = {"right": 147, "left": 148}
# Serving: in two-player mode the side due to serve must press FIRE within 2 seconds or get -1 (the
# score does not change, only that reward); single-player Pong serves by itself, so agents never
# learned to. With auto_serve, FIRE is added to a side's action on every frame where no ball is in
# play (RAM byte 54, ball y, is 0 exactly then: checked against the screen over a whole game); the
# serve then comes 62 frames after a point, as in single-player Pong. Not while the ball is in play:
# there FIRE speeds up the return (measured), which would change the game.
BALL_Y_RAM = 54  # 0 while no ball is in play
SCREEN_SHAPE = (210, 160, 3)
INSTALL_HINT = 'two-player Pong needs the versus extra: pip install -e ".[versus]"'


class VersusUnavailable(ImportError):
    """PettingZoo or multi-agent-ale-py is not installed; the message says how to install them."""


def rom_folder():
    """ale-py's own roms folder, which holds pong.bin."""
    return os.path.join(os.path.dirname(ale_py.__file__), "roms")


def require():
    """Import PettingZoo's Pong module, or raise VersusUnavailable with the install hint.

    pettingzoo.atari.pong_v3 re-exports this module's parallel_env and warns (DeprecationWarning,
    PettingZoo 1.27) that its registry is the new way; the module itself is the same since 1.24.
    Importing PettingZoo sets SDL_AUDIODRIVER to "dsp"; the caller's setting is put back."""
    audio = os.environ.get("SDL_AUDIODRIVER")
    try:
        from pettingzoo.atari.pong import pong
    except ImportError:
        raise VersusUnavailable(INSTALL_HINT) from None
    finally:
        if audio is None:
            os.environ.pop("SDL_AUDIODRIVER", None)
        else:
            os.environ["SDL_AUDIODRIVER"] = audio
    return pong


def available():
    try:
        require()
    except VersusUnavailable:
        return False
    return True


# ----------------------------------------------------------------------------- mirroring
# An agent learned on the right (green) paddle. Playing the left side it sees the screen flipped
# left-right with the two paddles' colours swapped (the score digits too, which are in the same
# colours), so its own paddle is again the green one on the right (the paddles sit at columns 16-19
# and 140-143: the flip maps one onto the other). RGB green (92, 186, 92) and orange (213, 130, 74),
# grayscale 147 and 148 (ALE's luminance). Karpathy's preprocessing binarizes (both paddles become 1),
# so only the flip matters there; DeepMind's keeps the gray shade, so the swap does. The score band
# (rows 0-20, above the top wall) is not flipped: its two fields, each two digits right-aligned at
# columns 20-47 and 100-127 (measured over whole games), trade places, so the digits read as they
# always did and the agent's own score stands where it always stood. (Flipped, they came out as
# mirror-image glyphs 12 columns off: a DeepMind-preset agent sees the band.) The mirrored screen is
# then exactly the right player's screen with the scores exchanged. Actions need no mirroring.

_GRAY_SWAP = np.arange(256, dtype=np.uint8)
_GRAY_SWAP[[PADDLE_GRAY["right"], PADDLE_GRAY["left"]]] = PADDLE_GRAY["left"], PADDLE_GRAY["right"]


def _is_colour(rgb, colour):
    r, g, b = colour
    return (rgb[..., 0] == r) & (rgb[..., 1] == g) & (rgb[..., 2] == b)  # (H, W): 10x faster than .all(axis=2)


SCORE_ROWS = slice(0, 21)  # the score band, above the top wall (rows 24-33)
SCORE_FIELDS = (slice(20, 48), slice(100, 128))  # left's and right's two digits, right-aligned


def flip_screen(screen):
    """(210, 160[, 3]) -> flipped left-right, except the score band, where the two fields trade places."""
    out = np.ascontiguousarray(screen[:, ::-1])
    left, right = SCORE_FIELDS
    out[SCORE_ROWS] = screen[SCORE_ROWS]
    out[SCORE_ROWS, left] = screen[SCORE_ROWS, right]
    out[SCORE_ROWS, right] = screen[SCORE_ROWS, left]
    return out


def mirror_rgb(frame):
    """(210, 160, 3) uint8 -> flip_screen with the paddles' (and digits') colours swapped."""
    out = flip_screen(frame)  # (210, 160, 3)
    green, orange = _is_colour(out, PADDLE_RGB["right"]), _is_colour(out, PADDLE_RGB["left"])  # (210, 160)
    out[green] = PADDLE_RGB["left"]
    out[orange] = PADDLE_RGB["right"]
    return out


def mirror_gray(gray):
    """(210, 160) uint8 grayscale -> flip_screen with the paddles' (and digits') shades swapped."""
    return _GRAY_SWAP[flip_screen(gray)]  # (210, 160)


# ----------------------------------------------------------------------------- the game

def skip_frames(frame, gray, pool, frameskip):
    """Run frame() -> (rewards, game over) up to frameskip times; return (summed rewards, game over).

    pool (2, H, W) gets gray() of the last frame in [0] and of the one before in [1], at the same
    frames as gymnasium's AtariPreprocessing takes them; when the game ends early it keeps what it
    had, as there. Shared by VersusPong and the test that checks it against AtariPreprocessing."""
    total, over = 0.0, False
    for t in range(frameskip):
        rewards, over = frame()
        total = total + np.asarray(rewards, np.float64)
        if over:
            break
        if t == frameskip - 2:
            pool[1] = gray()
        elif t == frameskip - 1:
            pool[0] = gray()
    return total, over


class VersusPong:
    """Two-player Pong, stepped `frameskip` frames at a time with both players' actions.

        env = VersusPong()
        env.reset(seed=0)
        (left_reward, right_reward), terminated, truncated = env.step(left_action, right_action)

    Actions are indices into ACTION_MEANINGS. A game ends (terminated) at 21 points; max_steps
    truncates it earlier. recorder: an envs.versus_recording.VersusRecorder, told every step."""

    def __init__(self, frameskip=4, auto_serve=True, max_steps=None, recorder=None):
        if int(frameskip) < 2:
            raise ValueError(f"frameskip must be >= 2 (the max-pool needs two frames), got {frameskip}")
        if max_steps is not None and int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
        pong = require()
        # the bare ParallelAtariEnv: the parallel->AEC->parallel wrappers cost 2.5x per frame
        self.pz = pong.parallel_env(num_players=2, auto_rom_install_path=rom_folder(),
                                       max_cycles=2**62).unwrapped
        self.ale = self.pz.ale
        if tuple(self.pz.possible_agents) != (AGENT_IDS["right"], AGENT_IDS["left"]):
            raise RuntimeError(f"PettingZoo's Pong has agents {self.pz.possible_agents}, expected first_0, second_0")
        self.frameskip, self.auto_serve = int(frameskip), bool(auto_serve)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.recorder = recorder
        self.rgb = np.zeros(SCREEN_SHAPE, np.uint8)            # last screen
        self.gray_pool = np.zeros((2, 210, 160), np.uint8)     # [last frame, the one before]
        self.steps, self.seed, self.noop_frames, self.over = 0, None, 0, True

    @property
    def kwargs(self):
        """What a recording needs to rebuild this env (max_steps only cuts games short)."""
        return {"frameskip": self.frameskip, "auto_serve": self.auto_serve}

    def _gray(self):
        return self.ale.getScreenGrayscale()[:, :, 0]  # (210, 160)

    def _frame(self, left, right):
        """One emulator frame; returns ((left, right) rewards, game over)."""
        if self.auto_serve and self.ale.getRAM()[BALL_Y_RAM] == 0:
            left, right = WITH_FIRE[left], WITH_FIRE[right]
        _, rewards, terminations, _, _ = self.pz.step({AGENT_IDS["left"]: int(left), AGENT_IDS["right"]: int(right)})
        return ((rewards.get(AGENT_IDS["left"], 0), rewards.get(AGENT_IDS["right"], 0)),
                any(terminations.values()))

    def reset(self, seed, noop_frames=0):
        """A new game: reseed the emulator, let noop_frames frames pass with both idle; returns the screen."""
        if int(noop_frames) < 0:
            raise ValueError(f"noop_frames must be >= 0, got {noop_frames}")
        self.pz.reset(seed=int(seed))
        for _ in range(int(noop_frames)):
            self._frame(0, 0)  # the first serve comes at frame 56 whatever anyone presses
        self.rgb = self.ale.getScreenRGB()
        self.gray_pool[0] = self._gray()
        self.gray_pool[1] = 0  # AtariPreprocessing's reset: max(screen, zeros) is the screen
        self.steps, self.seed, self.noop_frames, self.over = 0, int(seed), int(noop_frames), False
        if self.recorder is not None:
            self.recorder._start(self)
        return self.rgb

    def step(self, left, right):
        """Both actions held for frameskip frames; returns ((left, right) rewards, terminated, truncated)."""
        if self.over:
            raise RuntimeError("the game is over: call reset() first")
        for side, a in (("left", left), ("right", right)):
            if not 0 <= int(a) < len(ACTION_MEANINGS):
                raise ValueError(f"{side} action {a} is not one of Pong's {len(ACTION_MEANINGS)} actions")
        rewards, terminated = skip_frames(lambda: self._frame(left, right), self._gray, self.gray_pool,
                                          self.frameskip)  # (2,) left, right
        self.rgb = self.ale.getScreenRGB()
        self.steps += 1
        truncated = not terminated and self.max_steps is not None and self.steps >= self.max_steps
        self.over = terminated or truncated
        if self.recorder is not None:
            self.recorder._step((int(left), int(right)), rewards, self.rgb, terminated, truncated)
        return rewards, terminated, truncated

    def close(self):
        self.pz.close()


# ----------------------------------------------------------------------------- each side's input

def check_agent_spec(spec):
    """ValueError unless an agent trained on this env spec can play two-player Pong."""
    if spec.get("env_id") != "ALE/Pong-v5":
        raise ValueError(f"versus plays Pong agents; this one was trained on {spec.get('env_id')}")
    if spec.get("preset") not in ("karpathy", "deepmind"):
        raise ValueError(f"versus knows the karpathy and deepmind presets, not {spec.get('preset')!r}")
    if spec.get("frameskip", 4) != 4:
        raise ValueError(f"versus steps 4 frames at a time; this agent was trained at frameskip {spec['frameskip']}")
    if spec["preset"] == "deepmind" and (spec.get("frame_stack", 4), spec.get("screen_size", 84)) != (4, 84):
        raise ValueError(f"versus builds 4 stacked 84x84 frames; this agent wants {spec.get('frame_stack')} "
                         f"of {spec.get('screen_size')}")


class KarpathyView:
    """Karpathy's input for one side: the difference of preprocessed frames (envs.atari.KarpathyPong),
    from the screen mirrored on the left. Agent action 0 (up) is ALE RIGHT, 1 (down) LEFT."""

    labels = ("UP", "DOWN")
    _to_ale = (ACTION_MEANINGS.index("RIGHT"), ACTION_MEANINGS.index("LEFT"))

    def __init__(self, side):
        if side not in SIDES:
            raise ValueError(f"side must be left or right, got {side!r}")
        self.side, self.prev = side, None

    def _frame(self, env):
        return mirror_rgb(env.rgb) if self.side == "left" else env.rgb

    def reset(self, env):
        self.prev = karpathy_preprocess(self._frame(env))  # (6400,)
        return np.zeros(6400, np.float32)

    def step(self, env):
        cur = karpathy_preprocess(self._frame(env))  # (6400,)
        obs, self.prev = cur - self.prev, cur
        return obs

    def to_ale(self, action):
        return self._to_ale[int(action)]


class DeepMindView:
    """AtariPreprocessing (max of the last two frames, grayscale, 84x84 INTER_AREA) and a zero-padded
    stack of 4, as envs.make's deepmind preset builds them, from the mirrored frames on the left."""

    labels = ACTION_MEANINGS

    def __init__(self, side, stack=4, size=84):
        if side not in SIDES:
            raise ValueError(f"side must be left or right, got {side!r}")
        self.side, self.size = side, size
        self.stack = np.zeros((stack, size, size), np.uint8)  # (4, 84, 84), oldest first

    def _pooled(self, env):
        a, b = env.gray_pool
        if self.side == "left":
            a, b = mirror_gray(a), mirror_gray(b)
        return np.maximum(a, b)  # (210, 160)

    def _push(self, env):
        frame = cv2.resize(self._pooled(env), (self.size, self.size), interpolation=cv2.INTER_AREA)  # (84, 84)
        self.stack = np.concatenate([self.stack[1:], frame[None]])  # (4, 84, 84)
        return self.stack

    def reset(self, env):
        self.stack[:] = 0
        return self._push(env)

    def step(self, env):
        return self._push(env)

    def to_ale(self, action):
        return int(action)


def make_view(spec, side):
    """The view that turns the shared screens into what an agent trained on `spec` expects."""
    check_agent_spec(spec)
    return KarpathyView(side) if spec["preset"] == "karpathy" else DeepMindView(side, spec.get("frame_stack", 4),
                                                                                spec.get("screen_size", 84))
