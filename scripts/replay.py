"""Replay recorded games in a window: python -m scripts.replay FILE_OR_DIR [--export OUT.mp4|OUT.gif|DIR/] [--info].

Every recording in a directory plays in name order. Each game is re-simulated on the emulator (or
read from its stored frames when it has them, as envs.recording.export does) and every screen's
CRC32 is checked as it plays; a mismatch stops the replay with a one-line error.
Keys: Space pause, Left/Right seek 10 s of game time (one step while paused), N/P next and previous
game, + and - speed, Esc or Q quit. At the end of the last game the window waits for a key (with
SDL_VIDEODRIVER=dummy, where nobody sees it, the command ends there).
--export writes the recordings as videos without opening a window: one recording as OUT, several
(a directory) as OUT's name plus each recording's (game.mp4: game-game-000000.mp4, ...), or each into
the folder DIR/ under its own name; --info prints each recording's metadata as one JSON line.
Pong's actions are named as the paddle moves (RIGHT is UP), as watch and play name them.
Two-player recordings (scripts.versus) play back the same way, with both
players' actions on the panel.
"""
import json
import os
import sys
import zlib

import gymnasium as gym
import numpy as np

from envs import karpathy_preprocess, versus_recording
from envs.atari import readable_action_names
from envs import recording as single
from envs.recording import RecordingError
from envs.versus import ACTION_MEANINGS
from scripts.common import (Parser, UsageError, cannot_write, check_window, check_window_flags, fail, fps_value,
                            quietly_interrupted, writable_folder)
from scripts.viewer import NoDisplayError, Viewer, run

SEEK_SECONDS = 10.0


def build_parser():
    p = Parser(prog="python -m scripts.replay", description=__doc__.splitlines()[0])
    p.add_argument("path", metavar="FILE_OR_DIR", help="a recording (.npz) or a directory of them")
    p.add_argument("--export", metavar="OUT",
                   help="write the recordings as OUT.mp4 or OUT.gif (several: OUT's name plus each recording's), "
                        "or as mp4 files into the folder OUT/; no window")
    p.add_argument("--info", action="store_true", help="print the metadata of each recording and exit")
    p.add_argument("--fps", type=fps_value, default=None,
                   help="steps per second (default real time; for --export the video's frame rate)")
    p.add_argument("--scale", type=int, default=None, help="zoom (default 3 in the window, 1 for --export)")
    return p


def recording_paths(path):
    """The recordings named by FILE_OR_DIR: the file itself, or the .npz files in the directory."""
    if os.path.isdir(path):
        found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".npz"))
        if not found:
            raise UsageError(f"{path}: no recordings (.npz) in this directory")
        return found
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory")
    return [path]


_MEANINGS = {}


def is_versus(header):
    """Two-player recordings (envs/versus_recording.py) are replayed and shown by their own code."""
    return header.get("format") == versus_recording.FORMAT


def action_meanings(header):
    """Names of the recorded env's actions (the raw ALE indices the recording holds)."""
    if is_versus(header):
        return versus_labels()
    kwargs = {k: v for k, v in header["env_kwargs"].items() if k in ("full_action_space", "game", "mode")}
    key = (header["env_id"], json.dumps(kwargs, sort_keys=True))
    if key not in _MEANINGS:
        env = gym.make(header["env_id"], **kwargs)
        _MEANINGS[key] = readable_action_names(header["env_id"], env.unwrapped.get_action_meanings())
        env.close()
    return _MEANINGS[key]


class Tape:
    """One recording's screens by step number. The replay runs forward once, checking every CRC;
    the screens seen are kept zlib-compressed (about 1 KB each for Pong) so seeking back is instant."""

    def __init__(self, recording):
        self.rec = recording
        replay = versus_recording.replay if is_versus(recording.header) else single.replay
        self.stream = replay(recording.path, frames=recording.frames_zlib is not None)
        self.screens = []  # zlib of each (210, 160, 3) screen seen so far
        rewards = recording.rewards  # (L,), or (L, 2) for two players
        self.returns = np.concatenate([np.zeros((1,) + rewards.shape[1:]), np.cumsum(rewards, axis=0)])  # (L+1, ...)
        self._last = (None, None)

    def __len__(self):
        return len(self.rec.actions) + 1

    @property
    def checked(self):
        """Steps whose screens have been replayed and matched their CRC32."""
        return len(self.screens)

    def frame(self, i):
        if self._last[0] == i:
            return self._last[1]
        while len(self.screens) <= i:
            screen, _, _ = next(self.stream)  # RecordingError on a CRC mismatch
            self.screens.append(zlib.compress(screen.tobytes(), 1))
            if len(self.screens) == i + 1:
                self._last = (i, screen)
                return screen
        screen = np.frombuffer(zlib.decompress(self.screens[i]), np.uint8).reshape(210, 160, 3)
        self._last = (i, screen)
        return screen

    def close(self):
        self.stream.close()  # closes the emulator of a replay left half-way


class ReplaySession:
    """Recordings shown one after another, with seeking inside a game and jumps between games."""

    hold_at_end = True

    def __init__(self, recordings):
        self.recordings, self.index, self.tape = recordings, 0, None
        frameskip = recordings[0].header["env_kwargs"].get("frameskip", 4)
        self.steps_per_second = 60.0 / (frameskip if isinstance(frameskip, int) else 4)
        self.fps = self.steps_per_second
        self._open(0)

    def _open(self, index):
        if self.tape is not None:
            self.tape.close()
        self.index, self.pos = index, 0
        self.tape = Tape(self.recordings[index])
        self.meanings = action_meanings(self.recordings[index].header)

    def advance(self, held=()):
        if self.pos + 1 < len(self.tape):
            self.pos += 1
        elif self.index + 1 < len(self.recordings):
            self._open(self.index + 1)
        else:
            return False
        return True

    def command(self, name, paused):
        if name in ("forward", "back"):
            step = 1 if paused else int(SEEK_SECONDS * self.steps_per_second)
            self.pos = int(np.clip(self.pos + (step if name == "forward" else -step), 0, len(self.tape) - 1))
            return None
        if name in ("next", "previous"):
            index = self.index + (1 if name == "next" else -1)
            if not 0 <= index < len(self.recordings):
                return "no next game" if name == "next" else "no previous game"
            self._open(index)
        return None

    def frame(self):
        return self.tape.frame(self.pos)

    def panel(self):
        if is_versus(self.tape.rec.header):
            return versus_panel(self.tape, self.pos, self.index, len(self.recordings))
        rec, h, pos = self.tape.rec, self.tape.rec.header, self.pos
        view = self._view()  # first: it may replay the screen on show, which `checked` counts
        lines = [("file", os.path.basename(rec.path)),
                 ("game", f"{self.index + 1} of {len(self.recordings)}   player {h['player']}"),
                 ("step", f"{pos} of {len(self.tape) - 1}"),
                 ("score", f"{self.tape.returns[pos]:+g}   final {h['return']:+g}"),
                 ("checked", f"CRC32 of {self.tape.checked} screens ok")]
        action = int(rec.actions[pos - 1]) if pos > 0 else None
        values = np.zeros(len(self.meanings))
        if action is not None and action < len(values):
            values[action] = 1.0
        bars = {"title": "action taken", "labels": self.meanings, "values": values, "chosen": action,
                "kind": "action"}
        return {"title": f"{h['env_id']}  {h.get('protocol', '')}  replay", "lines": lines, "bars": bars,
                "view": view, "status": ""}

    def _view(self):
        """Karpathy's frame difference when the game was recorded on his preset (it is the agent's input)."""
        if self.tape.rec.header.get("preset") != "karpathy":
            return None
        now = karpathy_preprocess(self.tape.frame(self.pos))
        before = karpathy_preprocess(self.tape.frame(self.pos - 1)) if self.pos > 0 else now
        return {"title": "network's eye: frame difference", "kind": "diff", "tiles": [(now - before).reshape(80, 80)]}

    def close(self):
        self.tape.close()


def load_all(paths):
    try:
        return [versus_recording.load(p) if versus_recording.is_versus(p) else single.load(p) for p in paths]
    except RecordingError as e:
        raise UsageError(str(e)) from None


def main(argv=None, *, max_frames=None, keys=None, on_frame=None):
    """keys, max_frames, on_frame: see scripts.viewer.run (tests drive the window with them)."""
    args = build_parser().parse_args(argv)
    try:
        check_window_flags(args)
        paths = recording_paths(args.path)
        recordings = load_all(paths)
        if args.info:
            for rec in recordings:
                print(json.dumps({"path": rec.path, **rec.summary()}))
            return 0
        if args.export:
            return export(recordings, args)
        check_window(f", or write a video with `python -m scripts.replay {args.path} --export game.mp4`")
        session = ReplaySession(recordings)
        view = session._view()
        try:
            viewer = Viewer(f"grok-arcade replay: {args.path}", (210, 160, 3), args.scale or 3, "replay",
                            n_bars=max(len(action_meanings(r.header)) for r in recordings),
                            view_shapes=[(80, 80)] if view else ())
        except NoDisplayError as e:
            raise UsageError(str(e)) from None
        fps = session.fps if args.fps is None else args.fps
        run(viewer, session, fps, max_frames=max_frames, keys=keys, on_frame=on_frame)
    except (UsageError, RecordingError) as e:
        fail(str(e))
    return 0


def export_paths(recordings, out):
    """Where --export OUT writes each recording: OUT for one; for several, OUT's name plus each
    recording's (game.mp4 -> game-<recording>.mp4); into the folder OUT/ (a folder, or a name ending
    in /) as <recording>.mp4."""
    stems = [os.path.splitext(os.path.basename(r.path))[0] for r in recordings]
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        return [os.path.join(out, f"{stem}.mp4") for stem in stems]
    if len(recordings) == 1:
        return [out]
    base, suffix = os.path.splitext(out)
    return [f"{base}-{stem}{suffix}" for stem in stems]


def export(recordings, args):
    two = [r.path for r in recordings if is_versus(r.header)]
    if two:
        raise UsageError(f"--export writes single-player recordings; {two[0]} is a two-player one")
    into_folder = os.path.isdir(args.export) or args.export.endswith(("/", os.sep))
    if not into_folder and os.path.splitext(args.export)[1].lower() not in (".mp4", ".gif"):
        raise UsageError(f"--export {args.export}: write a .mp4 or a .gif, or into a folder (OUT/)")
    folder = args.export if into_folder else os.path.dirname(os.path.abspath(args.export))
    if not into_folder and not os.path.isdir(folder):
        raise UsageError(f"--export {args.export}: no such directory {folder}")
    if into_folder:
        writable_folder("--export", folder)
    for rec, out in zip(recordings, export_paths(recordings, args.export)):
        try:
            count = single.export(rec.path, out, fps=args.fps or None, scale=args.scale or 1)
        except ImportError as e:
            raise UsageError(str(e)) from None
        except OSError as e:
            raise cannot_write("--export", out, e) from None
        print(f"wrote {out}: {count} frames")
    return 0


def versus_panel(tape, pos, index, count):
    """The panel of a two-player recording at step pos: both players' actions as bars."""
    rec, h = tape.rec, tape.rec.header
    points = (rec.rewards[:pos] > 0).sum(axis=0) if pos else np.zeros(2, int)  # (2,)
    values = np.zeros(2 * len(ACTION_MEANINGS))
    if pos > 0:
        left, right = rec.actions[pos - 1]
        values[[left, len(ACTION_MEANINGS) + right]] = 1.0
    lines = [("file", os.path.basename(rec.path)),
             ("game", f"{index + 1} of {count}   seed {h['seed']}"),
             ("players", f"{h['players']['left']} vs {h['players']['right']}"),
             ("step", f"{pos} of {len(tape) - 1}"),
             ("score", f"{points[0]} : {points[1]}   final {h['points']['left']} : {h['points']['right']}"),
             ("checked", f"CRC32 of {tape.checked} screens ok")]
    return {"title": "Pong versus  replay", "lines": lines, "view": None, "status": "",
            "bars": {"title": "actions taken: left, right", "labels": versus_labels(), "values": values,
                     "chosen": None, "kind": "action"}}


def versus_labels():
    return [f"L {m}" for m in ACTION_MEANINGS] + [f"R {m}" for m in ACTION_MEANINGS]


if __name__ == "__main__":
    sys.exit(quietly_interrupted(main))
