"""Play an Atari game yourself: python -m scripts.play --game pong [--out recordings/] [--episodes N].

Arrows move, Space is FIRE (combined as the game allows: Up+Right+Space is UPRIGHTFIRE); in Pong,
whose paddle moves up on RIGHT and down on LEFT, Up and Down work as well. P pauses, + and -
change the speed, Esc or Q quits. The game runs on the deepmind preset's protocol (4 frames per
step, real time is 15 steps per second, no random no-op starts; sticky actions only with --sticky),
and every game is recorded into --out, one file per game, the last one too when you quit halfway:
demonstrations for pretraining, replayable with `python -m scripts.replay`.
"""
import os
import sys
import time

import numpy as np

import envs
from envs.atari import UP_IS_RIGHT, readable_action_names
from envs.recording import Recorder
from scripts.common import (Parser, UsageError, check_window, check_window_flags, fail, fps_value, parse_bool,
                            quietly_interrupted, seed_value, writable_folder)
from scripts.viewer import NoDisplayError, Viewer, run



def build_parser():
    p = Parser(prog="python -m scripts.play", description=__doc__.splitlines()[0])
    p.add_argument("--game", default="pong", help="an Atari game (default pong)")
    p.add_argument("--out", default="recordings", metavar="DIR", help="where games are saved (default recordings/)")
    p.add_argument("--episodes", type=int, default=0, help="games to play (default 0: until you quit)")
    p.add_argument("--seed", type=seed_value, default=None, help="seed of the first game (default: a random one)")
    p.add_argument("--fps", type=fps_value, default=None, help="steps per second (default 15, real time)")
    p.add_argument("--scale", type=int, default=3, help="zoom of the game frame (default 3)")
    p.add_argument("--sticky", type=parse_bool, default=False, metavar="{true,false}",
                   help="ALE v5 sticky actions (default false)")
    return p


def action_for(held, meanings, up_is_right=False):
    """The action index for the keys held: {'up', 'down', 'left', 'right', 'space'} -> e.g. UPRIGHTFIRE,
    dropping what the game lacks (FIRE first, then a direction); NOOP when nothing fits."""
    up, down, left, right = ("up" in held), ("down" in held), ("left" in held), ("right" in held)
    if up_is_right:
        right, left, up, down = right or up, left or down, False, False
    vertical = "UP" if up and not down else "DOWN" if down and not up else ""
    horizontal = "RIGHT" if right and not left else "LEFT" if left and not right else ""
    fire = "FIRE" if "space" in held else ""
    for name in (vertical + horizontal + fire, vertical + horizontal, vertical + fire, horizontal + fire,
                 vertical, horizontal, fire):
        if name and name in meanings:
            return meanings.index(name)
    return meanings.index("NOOP") if "NOOP" in meanings else 0


class PlaySession:
    """A person's games, each recorded from its reset and saved when it ends (or when they quit)."""

    hold_at_end = False

    def __init__(self, game, out_dir, seed, sticky, episodes=0, on_game=None):
        self.recorder = Recorder(player="human")
        self.env = envs.make(game, "deepmind", sticky=sticky, noop_max=0, recorder=self.recorder)
        self.env_id = self.env.grok_spec["env_id"]
        self.meanings = list(self.env.unwrapped.get_action_meanings())
        self.up_is_right = self.env_id in UP_IS_RIGHT
        self.out_dir, self.seed, self.episodes, self.on_game = out_dir, seed, episodes, on_game
        self.stem = f"{self.env_id.split('/')[-1].split('-')[0].lower()}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.fps = 15.0
        self.saved, self.game = [], -1
        self._next_game()

    def _next_game(self):
        self.game += 1
        self.obs, _ = self.env.reset(seed=self.seed + self.game)
        self.score, self.steps, self.over, self.action = 0.0, 0, False, None

    def advance(self, held=()):
        if self.over:
            if self.episodes and self.game + 1 >= self.episodes:
                return False
            self._next_game()
            return True
        self.action = action_for(held, self.meanings, self.up_is_right)
        self.obs, reward, terminated, truncated, _ = self.env.step(self.action)
        self.score += float(reward)
        self.steps += 1
        if terminated or truncated:
            self.over = True
            self._save(finished=True)
        return True

    def _save(self, finished):
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, f"{self.stem}-{self.game + 1:03d}.npz")
        self.recorder.save(path)
        self.saved.append(path)
        if self.on_game:
            self.on_game(self.game, self.seed + self.game, self.score, self.steps, path, finished)

    def command(self, name, paused):
        return None

    def frame(self):
        return self.env.unwrapped.ale.getScreenRGB()

    def panel(self):
        values = np.zeros(len(self.meanings))
        if self.action is not None:
            values[self.action] = 1.0
        lines = [("score", f"{self.score:+g}"),
                 ("game", f"{self.game + 1}" + (f" of {self.episodes}" if self.episodes else "")
                  + f"   seed {self.seed + self.game}"),
                 ("step", f"{self.steps}" + ("   game over" if self.over else "")),
                 ("saving", f"{self.out_dir}/")]
        return {"title": f"{self.env_id}  you play", "lines": lines,
                "bars": {"title": "your action", "labels": readable_action_names(self.env_id, self.meanings),
                         "values": values,
                         "chosen": self.action, "kind": "action"},
                "view": {"title": "what a DQN agent would see", "kind": "gray", "tiles": list(self.obs)},
                "status": "REC"}

    def close(self):
        if not self.over and self.steps > 0:
            self._save(finished=False)  # a game cut short is a demonstration too
        self.env.close()


def main(argv=None, *, max_frames=None, keys=None, on_frame=None):
    """keys, max_frames, on_frame: see scripts.viewer.run (tests drive the window with them)."""
    args = build_parser().parse_args(argv)
    try:
        if args.episodes < 0:
            raise UsageError(f"--episodes must be >= 0, got {args.episodes}")
        check_window_flags(args)
        try:
            env_id = envs.resolve(args.game)
        except envs.UnknownGameError as e:
            raise UsageError(str(e)) from None
        if not env_id.startswith("ALE/"):
            raise UsageError(f"--game {args.game}: play is for Atari games, not {env_id}")
        check_window()
        writable_folder("--out", args.out)
    except UsageError as e:
        fail(str(e))

    def row(k, seed, ret, length, path, finished):
        note = "" if finished else "  (cut short)"
        print(f"game {k + 1:3d}  seed {seed:6d}  return {ret:7.1f}  length {length:6d}  saved {path}{note}",
              flush=True)

    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % (2**31 - 100_000))
    session = PlaySession(env_id, args.out, seed, args.sticky, args.episodes, on_game=row)
    try:
        viewer = Viewer(f"grok-arcade play: {env_id}", (210, 160, 3), args.scale, "play",
                        n_bars=len(session.meanings), view_shapes=[(84, 84)] * 4)
    except NoDisplayError as e:
        session.close()
        fail(str(e))
    run(viewer, session, session.fps if args.fps is None else args.fps, max_frames=max_frames, keys=keys,
        on_frame=on_frame)
    return 0


if __name__ == "__main__":
    sys.exit(quietly_interrupted(main))
