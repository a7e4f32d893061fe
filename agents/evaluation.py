"""Play whole games with a trained agent and report full-game, unclipped returns; SideGames plays
them during training (eval.csv, videos/)."""
import math
import os

import numpy as np

import envs
from agents.run import EvalLog
from envs.recording import Recorder, RecordingError, export

VIDEO_SEED = 20_000_000  # + the episode count: a video game's seed, apart from the evaluations' seeds


def make_eval_env(agent, sticky=True, render_mode=None, recorder=None):
    """A single env with the agent's own preset, full games (no life-loss ends, no reward clipping)."""
    spec = agent.env
    return envs.make(spec["env_id"], spec["preset"], sticky=sticky, training=False,
                     render_mode=render_mode, noop_max=spec.get("noop_max", 30), recorder=recorder)


def play_game(agent, env, seed, explore=False, recorder=None, max_steps=200_000, on_step=None):
    """One whole game from reset(seed); returns (return, length). on_step(obs, action, info, reward)
    lets a viewer see every step; recorder (envs.recording) logs the raw game when given."""
    obs, _ = env.reset(seed=int(seed))
    total, length = 0.0, 0
    while length < max_steps:
        actions, info = agent.act(obs[None], explore=explore)
        action = int(actions[0])
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        length += 1
        if on_step:
            on_step(obs, action, info[0], reward)
        if terminated or truncated:
            break
    return total, length


def play_rule(agent, greedy=False, epsilon=None):
    """Set a loaded agent up for evaluation games; returns the `explore` flag its act() takes there.

    A policy-gradient agent samples from its policy, or with greedy takes the most likely action.
    A DQN agent is epsilon-greedy at its eval_epsilon (the protocol, Nature's 0.05), at `epsilon`
    when given (0.01: the final exploration SB3's zoo and CleanRL's training curves score at), or
    with greedy takes the argmax every step: eval_epsilon 0, SB3's deterministic evaluation."""
    if epsilon is not None:
        if agent.kind != "dqn":
            raise ValueError(f"an epsilon is for a DQN agent's random moves, not a {agent.kind} agent's")
        if greedy:
            raise ValueError("greedy play has no random moves: give greedy or an epsilon, not both")
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        agent.eval_epsilon = float(epsilon)
    if agent.kind in ("pg", "ppo"):
        return not greedy
    if greedy:
        agent.eval_epsilon = 0.0
    return False


def action_rule(agent, explore):
    """How the agent picks its actions in these games, for the report: a policy gradient agent
    samples from its policy or takes the most likely action; DQN is epsilon-greedy (greedy at 0)."""
    if agent.kind in ("pg", "ppo"):
        return "sampled" if explore else "greedy"
    eps = agent.epsilon if explore else agent.eval_epsilon
    return f"epsilon-greedy {eps:g}" if eps > 0 else "greedy"


def evaluate(agent, episodes, seed=0, sticky=True, explore=False, on_game=None, record_dir=None,
             message=None, between_steps=None):
    """Play `episodes` games with seeds seed, seed+1, ...; returns a summary dict.

    on_game(index, return, length) is called after each game, between_steps() after every step
    (scripts: the BLAS thread policy's poll). record_dir: save each game there; a recording that
    cannot be written is reported through message(text) and the games go on."""
    on_step = None if between_steps is None else (lambda obs, action, info, reward: between_steps())
    returns, lengths = [], []
    for k in range(episodes):
        recorder = None
        if record_dir is not None:
            recorder = Recorder(player=os.path.basename(agent.path))
        env = make_eval_env(agent, sticky, recorder=recorder)
        try:
            ret, length = play_game(agent, env, seed + k, explore, on_step=on_step)
            if recorder is not None:
                path = os.path.join(record_dir, f"game-{seed + k:06d}.npz")
                try:
                    recorder.save(path)
                except OSError as e:
                    if message:
                        message(f"could not write {path}: {e.strerror or e}")
        finally:
            env.close()
        returns.append(ret)
        lengths.append(length)
        if on_game:
            on_game(k, ret, length)
    return summarize(returns, lengths)


def next_multiple(value, every):
    return (value // every + 1) * every


class SideGames:
    """The games a training loop plays beside its own, with its current network, called at points
    where that is safe (between updates): every `every` agent steps an evaluation on `episodes` whole
    games into eval.csv, on the same seeds each time so the curve compares like with like, with an
    "eval" event for the callback; and with run.video_every, one game every that many episodes,
    recorded into games/ and exported to videos/ as mp4 (envs.recording), with a "video" event.

    player(): a fresh playing agent on the current weights, with its own random generator, so these
    games never draw from the training's. sticky and explore: the protocol and play_rule's flag."""

    def __init__(self, run, player, every, episodes, seed, sticky, explore, callback=None):
        self.run, self.player, self.every, self.episodes = run, player, int(every), int(episodes)
        self.seed, self.sticky, self.explore, self.callback = seed, bool(sticky), explore, callback
        self.log = EvalLog(run)
        self.log.start(run.step)
        self.next_eval = next_multiple(run.step, self.every) if self.every > 0 else math.inf
        # a new run's first video comes at its start (the untrained agent, as CleanRL's first video), then
        # one every video_every episodes; a resumed run goes on with the next multiple
        self.next_video = (0 if run.episode == 0 else next_multiple(run.episode, run.video_every)) \
            if run.video_every > 0 else math.inf

    def __call__(self):
        """Play whatever is due; returns whether anything was played."""
        run, played = self.run, False
        if run.step >= self.next_eval:
            self.next_eval = next_multiple(run.step, self.every)
            result = evaluate(self.player(), self.episodes, seed=self.seed, sticky=self.sticky, explore=self.explore)
            self.log.append(run.step, result)
            played = True
            if self.callback:
                self.callback({"event": "eval", "step": run.step,
                               **{k: result[k] for k in ("mean_return", "std_return", "episodes")}})
        if run.episode >= self.next_video:
            self.next_video = next_multiple(run.episode, run.video_every)
            self.video()
            played = True
        return played

    def video(self):
        """One game recorded with its screens (games/episode-N.npz) and exported (videos/episode-N.mp4);
        a file that cannot be written is said through run.message and training goes on."""
        run = self.run
        name = f"episode-{run.episode:07d}"
        game, video = os.path.join(run.dir, "games", f"{name}.npz"), os.path.join(run.dir, "videos", f"{name}.mp4")
        agent = self.player()
        recorder = Recorder(player=f"{os.path.basename(run.dir)} at step {run.step}", frames=True)
        try:
            env = make_eval_env(agent, self.sticky, recorder=recorder)
            try:
                ret, length = play_game(agent, env, VIDEO_SEED + run.episode, self.explore)
            finally:
                env.close()
            os.makedirs(os.path.dirname(game), exist_ok=True)
            os.makedirs(os.path.dirname(video), exist_ok=True)
            recorder.save(game)
            export(game, video)
        except (OSError, RecordingError, ValueError) as e:
            run.message(f"could not record the video of episode {run.episode}: {getattr(e, 'strerror', None) or e}")
            return
        if self.callback:
            self.callback({"event": "video", "step": run.step, "episode": run.episode, "path": video,
                           "return": ret, "length": length})


def summarize(returns, lengths):
    """The summary of finished games (returns and lengths in game order)."""
    r = np.array(returns, dtype=np.float64)
    return {"episodes": len(returns), "mean_return": float(r.mean()), "std_return": float(r.std()),
            "min_return": float(r.min()), "max_return": float(r.max()),
            "mean_length": float(np.mean(lengths)), "returns": list(returns)}


# Published scores a shipped card sets its own beside, each with the epsilon its games were played at.
# Random and human play: the Atari-57 table of van Hasselt et al. (2016) and Wang et al. (2016), which
# DQN Zoo uses for human-normalized scores; Nature DQN: Mnih et al. (2015), 50M agent steps, epsilon
# 0.05. The Pong rows after it: CleanRL's dqn_atari after 10M steps (20.25 in its docs is the training
# curve's last episodes, played at its final exploration 0.01; the model card of the run it ships,
# cleanrl/PongNoFrameskip-v4-dqn_atari-seed1, reports 17.80 from its dqn_eval at epsilon 0.05) and
# the SB3 zoo's DQN after 10M steps (rl_zoo3 plays Atari stochastically: exploration_final_eps 0.01).
# All NoFrameskip-v4, without sticky actions.
REFERENCE_SCORES = {
    "ALE/Pong-v5": {"random": -20.7, "human": 14.6, "Nature DQN (50M steps, epsilon 0.05)": 18.9,
                    "CleanRL dqn_atari (10M steps, its evaluation at epsilon 0.05)": 17.8,
                    "CleanRL dqn_atari (10M steps, training games at epsilon 0.01)": 20.25,
                    "SB3 zoo DQN (10M steps, epsilon 0.01)": 20.6},
    "ALE/Breakout-v5": {"random": 1.7, "human": 30.5, "Nature DQN (50M steps, epsilon 0.05)": 401.2},
}


def human_normalized(env_id, score):
    """100 * (score - random) / (human - random): 0 plays like random, 100 like the human tester;
    None for a game without reference scores."""
    ref = REFERENCE_SCORES.get(env_id)
    if ref is None:
        return None
    return 100.0 * (score - ref["random"]) / (ref["human"] - ref["random"])
