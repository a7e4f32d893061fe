"""Matches on two-player Pong (envs/versus.py): agents or a person on either side, game k seeded seed+k
after 0 to noop_max idle frames, every game recorded (envs/versus_recording.py) and tallied.

A player is anything with start(env), ale_action(held) and observe(env): AgentPlayer wraps a loaded
agent (its act(obs, explore) as agents.load gives it) with its side's view, so a left-side agent sees
the screen mirrored, as if it were on the right where it learned; scripts.versus adds the person at
the keyboard. round_robin() puts every agent on the left against every one on the right.
"""
import os

import numpy as np

from envs.versus import VersusPong, make_view
from envs.versus_recording import VersusRecorder


class AgentPlayer:
    """A checkpoint on one side: its view of the shared screen, its decision about to be taken."""

    def __init__(self, agent, side, explore):
        self.agent, self.side, self.explore = agent, side, explore
        self.view = make_view(agent.env, side)
        self.name = os.path.basename(agent.path)
        self.obs, self.action, self.info = None, None, None

    def start(self, env):
        self.obs = self.view.reset(env)
        self._decide()

    def _decide(self):
        actions, info = self.agent.act(self.obs[None], explore=self.explore)  # (1,), (1, A)
        self.action, self.info = int(actions[0]), np.asarray(info[0], np.float64)

    def ale_action(self, held=()):
        return self.view.to_ale(self.action)

    def observe(self, env):
        self.obs = self.view.step(env)
        self._decide()


def side_seed(seed, side):
    """Independent random streams for the two agents (the same checkpoint may play both sides)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, ("left", "right").index(side)]).generate_state(1)[0])


class Match:
    """Games between two players on one two-player Pong; game k is seeded seed+k. Every game is
    recorded (kept in memory) and saved into record_dir when there is one."""

    def __init__(self, left, right, seed=0, noop_max=30, max_steps=None, record_dir=None, stem=None,
                 on_game=None):
        self.left, self.right, self.seed, self.noop_max = left, right, int(seed), int(noop_max)
        self.record_dir, self.on_game = record_dir, on_game
        self.stem = stem or "versus"
        self.recorder = VersusRecorder(left.name, right.name)
        self.env = VersusPong(max_steps=max_steps, recorder=self.recorder)
        self.results, self.saved = [], []
        self.game, self.over = -1, True

    def start_game(self):
        self.game += 1
        seed = self.seed + self.game
        noops = int(np.random.default_rng(seed).integers(0, self.noop_max + 1)) if self.noop_max else 0
        self.env.reset(seed, noops)
        self.left.start(self.env)
        self.right.start(self.env)
        self.points, self.steps, self.over = np.zeros(2, int), 0, False

    def step(self, held=()):
        """One step of both players; returns True when it ended the game."""
        rewards, terminated, truncated = self.env.step(self.left.ale_action(held), self.right.ale_action(held))
        self.points += rewards > 0  # a missed serve's -1 is no point for the other side
        self.steps += 1
        if terminated or truncated:
            self._finish("terminated" if terminated else "truncated")
            return True
        self.left.observe(self.env)
        self.right.observe(self.env)
        return False

    def _finish(self, end):
        self.over = True
        path = self.save() if self.record_dir else None
        result = {"game": self.game, "seed": self.seed + self.game, "left": int(self.points[0]),
                  "right": int(self.points[1]), "steps": self.steps, "end": end, "path": path}
        self.results.append(result)
        if self.on_game:
            self.on_game(result)

    def save(self):
        os.makedirs(self.record_dir, exist_ok=True)
        path = os.path.join(self.record_dir, f"{self.stem}-{self.seed + self.game:06d}.npz")
        self.recorder.save(path)
        self.saved.append(path)
        return path

    def cut_short(self):
        """The game in progress ends here (the person quit): recorded, not scored (summary)."""
        if not self.over and self.steps > 0:
            self._finish("quit")

    def play(self, games):
        for _ in range(games):
            self.start_game()
            while not self.step():
                pass
        return self.results

    def close(self):
        self.env.close()


def summary(left, right, results):
    """The head-to-head of the games played out (to 21 points, or to --max-steps); a game the person
    quit is recorded but not scored (0-8 when they quit is nobody's win): cut_short counts them."""
    played = [r for r in results if r["end"] != "quit"]
    diff = np.array([r["left"] - r["right"] for r in played], np.float64)
    return {"left": left, "right": right, "games": len(played),
            "left_wins": int((diff > 0).sum()), "right_wins": int((diff < 0).sum()), "draws": int((diff == 0).sum()),
            "mean_point_diff": float(diff.mean()) if len(diff) else 0.0, "cut_short": len(results) - len(played)}


def match_stem(left, right):
    strip = lambda name: os.path.splitext(name)[0]  # noqa: E731
    return f"{strip(left)}-vs-{strip(right)}"



def round_robin(paths, player, games, seed=0, noop_max=30, max_steps=None, record_dir=None, on_match=None,
                on_game=None):
    """Every agent of `paths` on the left against every one on the right, itself too: a summary() per
    pairing. player(path, side) gives an AgentPlayer; on_match(left, right) is called before each."""
    names = list(dict.fromkeys(paths))
    matches = []
    for a in names:
        for b in names:
            left, right = player(a, "left"), player(b, "right")
            if on_match:
                on_match(a, b)
            match = Match(left, right, seed, noop_max, max_steps, record_dir, match_stem(left.name, right.name),
                          on_game=on_game)
            try:
                matches.append(summary(a, b, match.play(games)))
            finally:
                match.close()
    return matches
