"""Watch an agent play in a window: python -m scripts.watch [CHECKPOINT] [--episodes N] [--fps F] [--seed S] [--record DIR].

With no CHECKPOINT it plays the best shipped Pong agent: of checkpoints/pong-ppo.npz, pong-pg.npz
and pong-dqn.npz, the one whose model card (checkpoints/<name>.md) reports the higher mean
return on the protocol it trained on, the one it is watched on (a card without scripts.ship's
evaluation JSON: its "mean return: X"); without cards, in that order. Game k is seeded seed+k and the agent acts
as in scripts.evaluate (policy gradient samples and DQN is epsilon-greedy at the evaluation epsilon,
unless --greedy or --epsilon), on the protocol it was trained on unless --sticky says otherwise.

Keys: Space pause, Right one step while paused, + and - speed, R start and stop recording, Esc or Q quit.
Recording keeps the whole current game (the recorder logs every game from its reset): R saves
games into --record DIR (default recordings/) as they end, and pressing R again saves the game so
far. With --record every game is saved from the start. Quitting saves a recorded game cut short.
"""
import os
import pathlib
import re
import sys

import numpy as np

from agents.evaluation import make_eval_env
from agents.run import checkpoint_header
from agents.ship import scores_in
from envs.atari import readable_action_names
from envs.recording import Recorder
from nets import CheckpointError
from scripts.common import (Parser, UsageError, add_blas_threads_flag, add_epsilon_flag, add_greedy_flag,
                            blas_threads, check_record_dir, check_window, check_window_flags, fail, fps_value,
                            load_agent, parse_bool, play_rule_from_flags, quietly_interrupted, seed_value)
from scripts.viewer import NoDisplayError, Viewer, run

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ("pong-ppo", "pong-pg", "pong-dqn")  # preference order when the model cards do not decide
DEFAULT_RECORD_DIR = "recordings"
TRAIN_HINT = ("train one with `python -m scripts.train --run-dir runs/pong-ppo`, then "
              "`python -m scripts.watch runs/pong-ppo/checkpoint.npz`")


def build_parser():
    p = Parser(prog="python -m scripts.watch", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", help="an agent checkpoint (.npz); default: the best shipped Pong agent")
    p.add_argument("--episodes", type=int, default=3, help="whole games to play (default 3)")
    p.add_argument("--fps", type=fps_value, default=None,
                   help="agent steps per second (default real time: 15 on Atari; 0: as fast as possible)")
    p.add_argument("--seed", type=seed_value, default=0, help="seed of the first game; game k uses seed+k")
    p.add_argument("--record", metavar="DIR", help="save every game as a recording in DIR")
    p.add_argument("--scale", type=int, default=None, help="zoom of the game frame (default 3 on Atari, 1 otherwise)")
    p.add_argument("--sticky", type=parse_bool, default=None, metavar="{true,false}",
                   help="sticky actions (default: the protocol the checkpoint was trained on)")
    add_greedy_flag(p)
    add_epsilon_flag(p)
    add_blas_threads_flag(p, "1: one thread keeps up with the window's frame rate")
    return p


def model_card_mean(card, protocol=None):
    """The mean return a model card reports on `protocol` (scripts.ship's evaluation JSON; its first
    row if none is on that protocol), else a looser 'mean return: 18.3', else None."""
    try:
        text = pathlib.Path(card).read_text(errors="replace")
    except OSError:
        return None
    scores = scores_in(text)
    if scores:
        return scores.get(protocol, next(iter(scores.values())))
    found = re.search(r"mean[ _]return\D{0,20}?(-?\d+(?:\.\d+)?)", text, re.IGNORECASE)
    return float(found.group(1)) if found else None


def trained_protocol(path):
    """The protocol a checkpoint was trained on ('v4-nosticky', ...), None if it cannot be read."""
    try:
        env = checkpoint_header(path).get("env")
    except (CheckpointError, OSError):
        return None
    return env.get("protocol") if isinstance(env, dict) else None


def shipped_checkpoint(folder=None):
    """Path of the best shipped Pong checkpoint (see the module docstring); UsageError if none."""
    folder = pathlib.Path(folder) if folder is not None else ROOT / "checkpoints"
    found = [name for name in SHIPPED if (folder / f"{name}.npz").is_file()]
    if not found:
        raise UsageError(f"no shipped checkpoint yet (none of {', '.join(f'{n}.npz' for n in SHIPPED)} in {folder}): "
                         f"{TRAIN_HINT}")
    means = {name: model_card_mean(folder / f"{name}.md", trained_protocol(folder / f"{name}.npz")) for name in found}
    best = max(found, key=lambda name: -np.inf if means[name] is None else means[name])  # ties: SHIPPED order
    return str(folder / f"{best}.npz")


def action_labels(agent, env):
    if agent.env["preset"] == "karpathy":
        return ["UP", "DOWN"]  # KarpathyPong: action 0 is up, 1 is down
    if agent.env["env_id"].startswith("ALE/"):  # Pong: RIGHT is UP, as replay and play say
        return readable_action_names(agent.env["env_id"], env.unwrapped.get_action_meanings())
    return [f"action {i}" for i in range(agent.n_actions)]


def network_view(preset, obs):
    """The panel's picture of what the network gets, or None for small vectors."""
    if preset == "karpathy":
        return {"title": "network's eye: frame difference", "kind": "diff", "tiles": [obs.reshape(80, 80)]}
    if preset == "deepmind":
        return {"title": "network's eye: last 4 frames", "kind": "gray", "tiles": list(obs)}  # 4 x (84, 84)
    return None


class WatchSession:
    """An agent playing `episodes` games on one env; the panel shows the decision about to be taken."""

    hold_at_end = False

    def __init__(self, agent, episodes, seed, sticky, explore, record_dir=None, recording=False, on_game=None):
        self.agent, self.episodes, self.seed, self.explore = agent, episodes, seed, explore
        self.atari = agent.env["env_id"].startswith("ALE/")
        self.recorder = Recorder(player=os.path.basename(agent.path)) if self.atari else None
        self.record_dir = record_dir or DEFAULT_RECORD_DIR
        self.recording, self.saved, self.on_game = recording and self.atari, [], on_game
        self.env = make_eval_env(agent, sticky, render_mode=None if self.atari else "rgb_array",
                                 recorder=self.recorder)
        self.labels = action_labels(agent, self.env)
        frameskip = agent.env.get("frameskip", 4)
        self.fps = 60.0 / frameskip if self.atari else float(self.env.metadata.get("render_fps", 30))
        self.game = -1
        self._next_game()

    def _next_game(self):
        self.game += 1
        self.obs, _ = self.env.reset(seed=self.seed + self.game)
        self.score, self.won, self.lost, self.steps, self.over = 0.0, 0, 0, 0, False
        self.game_saved = None
        self._decide()

    def _decide(self):
        actions, info = self.agent.act(self.obs[None], explore=self.explore)  # (1,), (1, A)
        self.action, self.info = int(actions[0]), np.asarray(info[0], np.float64)

    def advance(self, held=()):
        if self.over:
            if self.game + 1 >= self.episodes:
                return False
            self._next_game()
            return True
        obs, reward, terminated, truncated, _ = self.env.step(self.action)
        self.score += float(reward)
        self.won, self.lost = self.won + (reward > 0), self.lost + (reward < 0)
        self.steps += 1
        self.obs = obs
        if terminated or truncated:
            self.over = True
            if self.recording:
                self.save()
            if self.on_game:
                self.on_game(self.game, self.seed + self.game, self.score, self.steps)
        else:
            self._decide()  # same order of random draws as agents.evaluation.play_game
        return True

    def save(self):
        os.makedirs(self.record_dir, exist_ok=True)
        path = os.path.join(self.record_dir, f"game-{self.seed + self.game:06d}.npz")
        self.recorder.save(path)
        self.game_saved = path
        if path not in self.saved:
            self.saved.append(path)
        return path

    def command(self, name, paused):
        if name != "record":
            return None
        if not self.atari:
            return f"recordings are for Atari games, not {self.agent.env['env_id']}"
        self.recording = not self.recording
        if self.recording:
            return f"recording this game from its start into {self.record_dir}/"
        return f"saved {self.save()}"

    def frame(self):
        return self.env.unwrapped.ale.getScreenRGB() if self.atari else self.env.render()

    def panel(self):
        spec, kind = self.agent.env, self.agent.kind
        lines = [("score", f"{self.score:+g}   won {self.won}  lost {self.lost}"),
                 ("game", f"{self.game + 1} of {self.episodes}   seed {self.seed + self.game}"),
                 ("step", f"{self.steps}" + ("   game over" if self.over else "")),
                 ("protocol", f"{spec['preset']}  {spec.get('protocol', '')}")]
        view = network_view(spec["preset"], self.obs)
        if view is None:
            lines.append(("input", np.array2string(np.asarray(self.obs), precision=2, suppress_small=True)))
        if kind == "ppo" and self.agent.values is not None:  # the critic's estimate of the return to come
            lines.append(("value", f"{float(self.agent.values[0]):+.3f}"))
        bars = action_bars(self.agent, self.labels, self.info, self.action)
        status = f"REC -> {self.record_dir}/" if self.recording else ""
        return {"title": f"{spec['env_id']}  {kind}  {os.path.basename(self.agent.path)}", "lines": lines,
                "bars": bars, "view": view, "status": status}

    def close(self):
        if self.recording and not self.over and self.steps > 0:
            self.save()  # a game cut short by quitting is kept too
        self.env.close()


def action_bars(agent, labels, values, chosen):
    """The panel's bars: a policy's action probabilities, or a Q-network's values."""
    if agent.kind in ("pg", "ppo"):
        return {"title": "action probabilities", "labels": labels, "values": values, "chosen": chosen, "kind": "prob"}
    return {"title": f"Q-values  (epsilon {agent.eval_epsilon:g})", "labels": labels, "values": values,
            "chosen": chosen, "kind": "q"}


def main(argv=None, *, max_frames=None, keys=None, on_frame=None):
    """keys, max_frames, on_frame: see scripts.viewer.run (tests drive the window with them)."""
    args = build_parser().parse_args(argv)
    try:
        if args.episodes < 1:
            raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
        check_window_flags(args)
        path = args.checkpoint or shipped_checkpoint()
        agent = load_agent(path, args.seed)
        explore = play_rule_from_flags(agent, args)
        if args.record:
            check_record_dir(agent, args.record)
        check_window(", or record games without a window (`python -m scripts.evaluate CHECKPOINT --record DIR`) "
                     "and export them (`python -m scripts.replay FILE --export game.mp4`)")
    except UsageError as e:
        fail(str(e))

    def row(k, seed, ret, length):
        print(f"game {k + 1:3d}  seed {seed:6d}  return {ret:7.1f}  length {length:6d}", flush=True)

    sticky = args.sticky if args.sticky is not None else agent.env.get("repeat_action_probability", 0.0) > 0
    with blas_threads(args.blas_threads, default=1):
        session = WatchSession(agent, args.episodes, args.seed, sticky, explore, args.record,
                               recording=bool(args.record), on_game=row)
        scale = args.scale or (3 if session.atari else 1)
        view = network_view(agent.env["preset"], session.obs)
        try:
            viewer = Viewer(f"grok-arcade watch: {os.path.basename(path)}", session.frame().shape, scale, "watch",
                            n_bars=len(session.labels), view_shapes=[t.shape for t in view["tiles"]] if view else ())
        except NoDisplayError as e:
            session.close()
            fail(str(e))
        fps = session.fps if args.fps is None else args.fps
        run(viewer, session, fps, max_frames=max_frames, keys=keys, on_frame=on_frame)
    for saved in session.saved:
        print(f"saved {saved}")
    return 0


if __name__ == "__main__":
    sys.exit(quietly_interrupted(main))
