"""Play whole games with a trained agent and report full-game, unclipped returns."""
import os

import numpy as np

import envs


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


def play_rule(agent, greedy=False):
    """Set a loaded agent up for evaluation games; returns the `explore` flag its act() takes there.

    A policy-gradient agent samples from its policy, or with greedy takes the most likely action.
    A DQN agent is epsilon-greedy at its eval_epsilon (the protocol, Nature's 0.05), or with greedy
    takes the argmax every step: eval_epsilon 0, SB3's deterministic evaluation."""
    if agent.kind == "pg":
        return not greedy
    if greedy:
        agent.eval_epsilon = 0.0
    return False


def action_rule(agent, explore):
    """How the agent picks its actions in these games, for the report: a policy gradient agent
    samples from its policy or takes the most likely action; DQN is epsilon-greedy (greedy at 0)."""
    if agent.kind == "pg":
        return "sampled" if explore else "greedy"
    eps = agent.epsilon if explore else agent.eval_epsilon
    return f"epsilon-greedy {eps:g}" if eps > 0 else "greedy"


def evaluate(agent, episodes, seed=0, sticky=True, explore=False, on_game=None, record_dir=None,
             message=None):
    """Play `episodes` games with seeds seed, seed+1, ...; returns a summary dict.

    on_game(index, return, length) is called after each game. record_dir: save each game there; a
    recording that cannot be written is reported through message(text) and the games go on."""
    returns, lengths = [], []
    for k in range(episodes):
        recorder = None
        if record_dir is not None:
            from envs.recording import Recorder
            recorder = Recorder(player=os.path.basename(agent.path))
        env = make_eval_env(agent, sticky, recorder=recorder)
        try:
            ret, length = play_game(agent, env, seed + k, explore)
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
    r = np.array(returns, dtype=np.float64)
    return {"episodes": episodes, "mean_return": float(r.mean()), "std_return": float(r.std()),
            "min_return": float(r.min()), "max_return": float(r.max()),
            "mean_length": float(np.mean(lengths)), "returns": returns}


# Published scores a shipped card sets its own beside. Random and human play: the Atari-57 table of
# van Hasselt et al. (2016) and Wang et al. (2016), which DQN Zoo uses for human-normalized scores;
# Nature DQN: Mnih et al. (2015), 50M agent steps, epsilon 0.05. The Pong rows after it are the ones
# issue 5 names (CleanRL's dqn_atari and the SB3 zoo, both NoFrameskip-v4 after 10M steps).
REFERENCE_SCORES = {
    "ALE/Pong-v5": {"random": -20.7, "human": 14.6, "Nature DQN (50M steps)": 18.9,
                    "CleanRL dqn_atari (10M steps)": 20.25, "SB3 zoo DQN (10M steps)": 20.6},
    "ALE/Breakout-v5": {"random": 1.7, "human": 30.5, "Nature DQN (50M steps)": 401.2},
}


def human_normalized(env_id, score):
    """100 * (score - random) / (human - random): 0 plays like random, 100 like the human tester;
    None for a game without reference scores."""
    ref = REFERENCE_SCORES.get(env_id)
    if ref is None:
        return None
    return 100.0 * (score - ref["random"]) / (ref["human"] - ref["random"])
