"""Two-player Pong: python -m scripts.versus [CHECKPOINT] --human | A.npz B.npz --games N [--no-window].

  python -m scripts.versus [CHECKPOINT] --human            you (left paddle) against an agent
  python -m scripts.versus A.npz B.npz --games N [--seed S] [--record DIR] [--no-window]
  python -m scripts.versus A.npz B.npz ... --round-robin --games N    every agent on the left against
                                                                       every one on the right
Needs the versus extra (pip install -e ".[versus]"); the game, the views and the matches are
envs/versus.py and envs/versus_match.py. With --human you play the left paddle (Up and Down, Space is
FIRE; P pause, +/- speed, Esc or Q quit) against CHECKPOINT (default: the best shipped Pong agent);
every game is recorded into --record DIR (default recordings/; `python -m scripts.replay` plays them
back). Agent against agent: A plays the left side, seeing the screen mirrored, B the right; game k is
seeded seed+k after 0 to --noop-max idle frames; agents act as in scripts.evaluate. The window shows
the left agent's decisions. The last line printed is one JSON object: left, right, games, left_wins,
right_wins, draws, mean_point_diff (left minus right points per game); with --round-robin, {"matches"}.
"""
import json
import os
import sys
import time

from agents.evaluation import play_rule
from envs.versus import ACTION_MEANINGS, VersusUnavailable, require
from envs.versus_match import AgentPlayer, Match, match_stem, round_robin, side_seed, summary
from scripts.common import (Parser, UsageError, add_blas_threads_flag, add_greedy_flag, blas_threads, check_folder,
                            check_window, check_window_flags, fail, fps_value, load_agent, seed_value)
from scripts.play import action_for
from scripts.viewer import NoDisplayError, Viewer, run
from scripts.watch import action_bars, network_view, shipped_checkpoint

DEFAULT_RECORD_DIR = "recordings"
STEPS_PER_SECOND = 15.0  # 60 frames a second, 4 a step


def build_parser():
    p = Parser(prog="python -m scripts.versus", description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                   help="with --human: the agent you play (default: the best shipped one); "
                        "else A (left) and B (right)")
    p.add_argument("--human", action="store_true", help="you play the left paddle with the arrow keys")
    p.add_argument("--games", type=int, default=None,
                   help="games to play (default: until you quit with --human, else 5)")
    p.add_argument("--seed", type=seed_value, default=0, help="seed of the first game; game k uses seed+k")
    p.add_argument("--record", metavar="DIR", help="save every game as a two-player recording in DIR "
                   "(with --human always, default recordings/)")
    p.add_argument("--no-window", action="store_true", help="agent against agent without a window")
    p.add_argument("--round-robin", action="store_true",
                   help="every CHECKPOINT on the left against every one on the right, itself too (no window)")
    p.add_argument("--max-steps", type=int, default=None, help="end a game after this many steps (default: at 21)")
    p.add_argument("--noop-max", type=int, default=None,
                   help="idle frames before a game starts, drawn from 0..N (default 30; 0 with --human)")
    add_greedy_flag(p)
    add_blas_threads_flag(p, "1: one thread keeps up with the window's frame rate")
    p.add_argument("--fps", type=fps_value, default=None,
                   help="steps per second (default 15, real time; 0: as fast as possible)")
    p.add_argument("--scale", type=int, default=3, help="zoom of the game frame (default 3)")
    return p


# ----------------------------------------------------------------------------- players

class HumanPlayer:
    """The person at the keyboard: Up/Down move (RIGHT/LEFT in Pong's action names), Space is FIRE."""

    name = "human"

    def __init__(self):
        self.action = None

    def start(self, env):
        self.action = None

    def ale_action(self, held=()):
        self.action = action_for(held, list(ACTION_MEANINGS), up_is_right=True)
        return self.action

    def observe(self, env):
        pass


def load_player(path, side, seed, greedy):
    agent = load_agent(path, side_seed(seed, side))
    try:
        return AgentPlayer(agent, side, explore=play_rule(agent, greedy))
    except ValueError as e:  # not a Pong agent
        raise UsageError(f"{path}: {e}") from None


def table(s):
    """A match summary as a few readable lines."""
    points = s.get("points", {})
    width = max(len(s["left"]), len(s["right"]), 5)
    lines = [f"{'side':<6}{'agent':<{width + 2}}{'wins':>6}{'points':>8}"]
    for side in ("left", "right"):
        lines.append(f"{side:<6}{s[side]:<{width + 2}}{s[side + '_wins']:>6}{points.get(side, ''):>8}")
    cut = f" (and {s['cut_short']} cut short, not scored)" if s.get("cut_short") else ""
    lines.append(f"{s['games']} games{cut}, {s['draws']} drawn, mean point difference (left - right) "
                 f"{s['mean_point_diff']:+.2f}")
    return "\n".join(lines)


def round_robin_table(matches, names):
    """Rows: the agent on the left; columns: the one on the right; cells: wins-losses (mean point diff)."""
    cells = {(m["left"], m["right"]): f"{m['left_wins']}-{m['right_wins']} ({m['mean_point_diff']:+.1f})"
             for m in matches}
    width = max([len(n) for n in names] + [len(c) for c in cells.values()] + [10]) + 2
    lines = ["left \\ right".ljust(width) + "".join(n.ljust(width) for n in names)]
    for a in names:
        lines.append(a.ljust(width) + "".join(cells.get((a, b), "-").ljust(width) for b in names))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the window

def versus_view(player, mirrored):
    view = network_view(player.agent.env["preset"], player.obs)
    if mirrored:
        view = {**view, "title": view["title"] + " (mirrored)"}
    return view


def agent_bars(player):
    bars = action_bars(player.agent, list(player.view.labels), player.info, player.action)
    return {**bars, "title": f"{player.side}: {bars['title']}"}


class VersusSession:
    """A match in the viewer (scripts/viewer.py); `shown` is the agent whose decisions the panel shows."""

    hold_at_end = False
    fps = STEPS_PER_SECOND

    def __init__(self, match, games, human):
        self.match, self.games, self.human = match, games, human
        self.shown = match.right if human else match.left
        match.start_game()

    def advance(self, held=()):
        m = self.match
        if m.over:
            if self.games and m.game + 1 >= self.games:
                return False
            m.start_game()
            return True
        m.step(held)
        return True

    def command(self, name, paused):
        if name == "record":
            return f"every game is saved into {self.match.record_dir}/" if self.match.record_dir else \
                "start with --record DIR to save the games"
        return None

    def frame(self):
        return self.match.env.rgb

    def panel(self):
        m, s = self.match, summary("left", "right", self.match.results)
        you, them = ("you", "agent") if self.human else ("left", "right")
        lines = [("score", f"{you} {m.points[0]} : {m.points[1]} {them}" + ("   game over" if m.over else "")),
                 ("tally", f"{you} {s['left_wins']}  {them} {s['right_wins']}  drawn {s['draws']}"),
                 ("game", f"{m.game + 1}" + (f" of {self.games}" if self.games else "")
                  + f"   seed {m.seed + m.game}   step {m.steps}"),
                 ("players", f"{m.left.name} vs {m.right.name}")]
        status = f"REC -> {m.record_dir}/" if m.record_dir else ""
        return {"title": f"Pong versus: {m.left.name} (left) - {m.right.name} (right)", "lines": lines,
                "bars": agent_bars(self.shown), "view": versus_view(self.shown, self.shown.side == "left"),
                "status": status}

    def close(self):
        if self.human:
            self.match.cut_short()  # a game cut short by quitting is recorded too
        self.match.close()


def check_args(args):
    n = len(args.checkpoints)
    if args.human and (n > 1 or args.round_robin or args.no_window):
        raise UsageError("--human plays one CHECKPOINT in a window: drop the second checkpoint, "
                         "--round-robin and --no-window")
    if not args.human and not args.round_robin and n != 2:
        raise UsageError(f"give two checkpoints (A plays left, B right), or one with --human; got {n}")
    if args.round_robin and n < 1:
        raise UsageError("--round-robin needs at least one CHECKPOINT")
    if args.games is not None and args.games < (0 if args.human else 1):
        raise UsageError(f"--games must be >= {0 if args.human else 1}, got {args.games}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.noop_max is not None and not 0 <= args.noop_max <= 10_000:
        raise UsageError(f"--noop-max must be 0 to 10000, got {args.noop_max}")
    check_window_flags(args)
    record = args.record or (DEFAULT_RECORD_DIR if args.human else None)
    if record:
        check_folder("--record", record)
    for path in args.checkpoints:
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such checkpoint file")
    return record


def print_game(result):
    saved = f"  saved {result['path']}" if result["path"] else ""
    cut = "  (cut short)" if result["end"] != "terminated" else ""
    print(f"game {result['game'] + 1:3d}  seed {result['seed']:6d}  left {result['left']:2d}  "
          f"right {result['right']:2d}  steps {result['steps']:6d}{cut}{saved}", flush=True)


def open_window(title, mode, session, scale):
    hint = "" if session.human else ", or play without a window: add --no-window"
    try:
        check_window(hint)
        tiles = session.panel()["view"]["tiles"]
        return Viewer(title, (210, 160, 3), scale, mode, n_bars=len(session.shown.view.labels),
                      view_shapes=[t.shape for t in tiles])
    except (UsageError, NoDisplayError) as e:
        session.close()
        raise UsageError(str(e)) from None


def play_match(args, noop_max, record, **window):
    """One match, in a window or (agent against agent, --no-window) without; returns its summary()."""
    if args.human:
        path = args.checkpoints[0] if args.checkpoints else shipped_checkpoint()
        left, right = HumanPlayer(), load_player(path, "right", args.seed, args.greedy)
        stem = f"versus-{time.strftime('%Y%m%d-%H%M%S')}"
        games, names = args.games or 0, ("human", path)
    else:
        left = load_player(args.checkpoints[0], "left", args.seed, args.greedy)
        right = load_player(args.checkpoints[1], "right", args.seed, args.greedy)
        stem, games = match_stem(left.name, right.name), args.games or 5
        names = tuple(args.checkpoints)
    match = Match(left, right, args.seed, noop_max, args.max_steps, record, stem, on_game=print_game)
    if not args.human and args.no_window:
        try:
            match.play(games)
        finally:
            match.close()
    else:
        session = VersusSession(match, games, args.human)
        viewer = open_window(f"grok-arcade versus: {left.name} - {right.name}", "play" if args.human else "watch",
                             session, args.scale)
        run(viewer, session, session.fps if args.fps is None else args.fps, **window)
    result = summary(*names, match.results)
    result["points"] = {side: sum(r[side] for r in match.results) for side in ("left", "right")}
    return result


def main(argv=None, *, max_frames=None, keys=None, on_frame=None):
    """keys, max_frames, on_frame: see scripts.viewer.run (tests drive the window with them)."""
    args = build_parser().parse_args(argv)
    try:
        record = check_args(args)
        try:
            require()
        except VersusUnavailable as e:
            raise UsageError(str(e)) from None
        noop_max = args.noop_max if args.noop_max is not None else (0 if args.human else 30)
        with blas_threads(args.blas_threads, default=1):
            if args.round_robin:
                player = lambda path, side: load_player(path, side, args.seed, args.greedy)  # noqa: E731
                matches = round_robin(args.checkpoints, player, args.games or 5, args.seed, noop_max, args.max_steps,
                                      record, on_match=lambda a, b: print(f"{a} (left) against {b} (right)", flush=True),
                                      on_game=print_game)
                print(round_robin_table(matches, list(dict.fromkeys(args.checkpoints))))
                print(json.dumps({"matches": matches}))
                return 0
            result = play_match(args, noop_max, record, max_frames=max_frames, keys=keys, on_frame=on_frame)
    except UsageError as e:
        fail(str(e))
    print(table(result))
    result.pop("points")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
