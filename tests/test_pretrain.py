"""Behaviour cloning from recorded games (agents/pretrain.py, scripts/pretrain.py).

A scripted teacher plays short Pong games from RAM (player y at byte 51, ball y at 54) and they are
recorded. The observations pretraining rebuilds must be the ones the real preset envs produced,
bit for bit; a policy cloned from the teacher must agree with it on a game it never saw, by a margin
over always taking the teacher's commonest action there; the checkpoints must start RL through
scripts.train --init; and bad input must fail in one line.
"""
import json
import os

import numpy as np
import pytest

import agents
import envs
from agents import dqn, pretrain
from envs.recording import Recorder
from envs.recording_format import data_crc32
from nets.npzfile import read_npz, write_npz

PG_FLAGS = ["--hidden", "64", "--epochs", "6", "--lr", "3e-3", "--val-fraction", "0.25"]
DQN_FLAGS = ["--game", "breakout", "--hidden", "32", "--epochs", "5", "--val-fraction", "0.25"]
MARGIN = 0.3  # a clone's agreement with its teacher on a game it never saw, above the commonest action's share


def teacher(env, preset):
    """Move the paddle toward the ball. karpathy: 0 up, 1 down; deepmind: NOOP near the ball,
    RIGHT (up) or LEFT (down) otherwise, so its recordings hold actions karpathy cannot take."""
    ram = env.unwrapped.ale.getRAM()
    gap = int(ram[54]) - (int(ram[51]) + 12)  # ball y minus about the paddle's middle
    if preset == "karpathy":
        return 0 if gap < 0 else 1
    return 0 if abs(gap) < 3 else (2 if gap < 0 else 3)


def sweeper():
    """A Breakout teacher for the Nature network: sweep the paddle (x at RAM byte 72) from wall to wall,
    RIGHT until it nears the right wall, then LEFT until it nears the left one. The action is read off
    the screen (where the paddle is, and which way it moved across the stack of four frames), so a clone
    can learn it from a few games. Pong's ball-following teacher cannot serve here: on Pong's grey
    background the network learned only the action frequencies in 1,200 updates (measured), where it
    learns this sweep in about 150 on Breakout's black one."""
    going = {"right": True}

    def policy(env, preset):
        x = int(env.unwrapped.ale.getRAM()[72])  # 55 at the left wall, 191 at the right
        if x <= 60:
            going["right"] = True
        elif x >= 185:
            going["right"] = False
        return 2 if going["right"] else 3  # Breakout's RIGHT, LEFT

    return policy


def play(path, preset, seed, steps, noop_max=30, policy=teacher, game="pong"):
    """Record one teacher game; return the observations the env gave and the actions taken."""
    recorder = Recorder(player="teacher")
    env = envs.make(game, preset, sticky=True, noop_max=noop_max, recorder=recorder)
    try:
        obs, _ = env.reset(seed=seed)
        seen, actions = [obs], []
        for _ in range(steps):
            actions.append(policy(env, preset))
            obs, _, terminated, truncated, _ = env.step(actions[-1])
            seen.append(obs)
            if terminated or truncated:
                break
        recorder.save(path)
    finally:
        env.close()
    return np.array(seen[:-1]), np.array(actions)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    (root / "karpathy").mkdir()
    (root / "deepmind").mkdir()
    made = {"karpathy": str(root / "karpathy"), "deepmind": str(root / "deepmind")}
    for seed in range(1, 5):
        seen = play(root / "karpathy" / f"game-{seed}.npz", "karpathy", seed, 500)
        made.setdefault("karpathy_seen", seen)
    for seed in (7, 8):
        seen = play(root / "deepmind" / f"game-{seed}.npz", "deepmind", seed, 120)
        made.setdefault("deepmind_seen", seen)
    (root / "sweeps").mkdir()
    made["sweeps"] = str(root / "sweeps")
    for seed in range(1, 5):
        play(root / "sweeps" / f"game-{seed}.npz", "deepmind", seed, 300, policy=sweeper(), game="breakout")
    return made


def agreement_on_a_new_game(act, game, preset, policy, seed=99, steps=400):
    """The teacher plays a game no recording holds; returns (share of its steps where act(obs) chose its
    action, share of its commonest action: what always answering that action would score)."""
    env = envs.make(game, preset, sticky=True)
    obs, _ = env.reset(seed=seed)
    agree, wanted = [], []
    for _ in range(steps):
        want = policy(env, preset)
        agree.append(act(obs) == want)
        wanted.append(want)
        obs, _, terminated, truncated, _ = env.step(want)
        if terminated or truncated:
            break
    env.close()
    return float(np.mean(agree)), float(np.bincount(wanted).max() / len(wanted))


def first_file(folder):
    return os.path.join(folder, sorted(os.listdir(folder))[0])


def rebuilt(path, **overrides):
    """(observations, labels, info) of one recording for a target made from Config(**overrides)."""
    target = pretrain.resolved(pretrain.Config(**overrides))
    frames, labels, info = pretrain.agent_steps(pretrain.layouts([path], target)[0], target)
    keep = np.flatnonzero(labels != pretrain.DROP)
    data = pretrain.Demonstrations(target, frames, np.zeros(len(frames), np.int64), keep, labels[keep],
                                   np.zeros(len(keep), np.int64), [info])
    return data.observations(np.arange(len(keep))), labels, info


def run_script(module, argv, capsys):
    import importlib
    try:
        code = importlib.import_module(module).main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------- observations

def test_karpathy_observations_are_the_envs_own(demos):
    seen, actions = demos["karpathy_seen"]
    obs, labels, info = rebuilt(first_file(demos["karpathy"]), agent="pg")
    assert info["frameskip"] == 4 and info["dropped"] == 0
    np.testing.assert_array_equal(labels, actions)
    np.testing.assert_array_equal(obs, seen)  # the frame differences, bit for bit


def test_deepmind_observations_are_the_envs_own(demos):
    """Frameskip-1 recording: no-op starts found, max-pooled 84x84 grayscale stacks rebuilt exactly."""
    seen, actions = demos["deepmind_seen"]
    obs, labels, info = rebuilt(first_file(demos["deepmind"]), agent="dqn")
    assert info["frameskip"] == 1 and info["noops"] > 0 and info["mixed_groups"] == 0
    np.testing.assert_array_equal(labels, actions)  # minimal action set: raw index = DQN's index
    assert obs.dtype == np.uint8 and obs.shape == seen.shape
    np.testing.assert_array_equal(obs, seen)


def test_frameskip_1_recording_subsampled_for_karpathy(demos):
    """Every 4th screen after the no-ops is what a karpathy env would have shown; NOOPs are dropped."""
    seen, actions = demos["deepmind_seen"]
    obs, labels, info = rebuilt(first_file(demos["deepmind"]), agent="pg")
    want = np.select([actions == 2, actions == 3], [0, 1], pretrain.DROP)  # RIGHT up, LEFT down
    np.testing.assert_array_equal(labels, want)
    assert info["dropped"] == int((actions == 0).sum()) > 0
    last = seen[:, -1]  # (K, 84, 84): the newest frame of each stack; its karpathy twin below
    assert obs.shape == (info["samples"], 6400) and set(np.unique(obs)) <= {-1.0, 0.0, 1.0}
    moving = np.flatnonzero(np.abs(np.diff(last.astype(int), axis=0)).sum(axis=(1, 2)) > 0) + 1
    kept = np.flatnonzero(labels != pretrain.DROP)
    both = np.intersect1d(moving, kept)
    rows = np.searchsorted(kept, both)
    assert np.abs(obs[rows]).sum(axis=1).min() > 0  # where the screen changed, so does the difference


def test_action_map_names():
    target = pretrain.resolved(pretrain.Config(agent="pg"))
    pong = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    assert pretrain.action_map(pong, target).tolist() == [-1, -1, 0, 1, 0, 1]
    target = pretrain.resolved(pretrain.Config(agent="dqn"))
    assert pretrain.action_map(pong, target).tolist() == [0, 1, 2, 3, 4, 5]
    assert pretrain.action_map(["NOOP", "UP", "RIGHT"], target).tolist() == [0, -1, 2]


def test_split_holds_out_whole_games():
    target = pretrain.resolved(pretrain.Config(agent="pg"))
    game = np.repeat(np.arange(5), 100)
    data = pretrain.Demonstrations(target, None, None, np.arange(500), np.zeros(500, np.int64), game, [])
    train, val = data.split(0.2, np.random.default_rng(0))
    assert len(val) == 100 and len(np.intersect1d(game[train], game[val])) == 0
    one = pretrain.Demonstrations(target, None, None, np.arange(50), np.zeros(50, np.int64), np.zeros(50), [])
    train, val = one.split(0.2, np.random.default_rng(0))
    assert val.tolist() == list(range(40, 50))  # one game: its tail


# ----------------------------------------------------------------------------- pretraining and RL after it

def test_pg_clone_imitates_the_teacher_and_starts_rl(demos, tmp_path, capsys):
    out = str(tmp_path / "pg.npz")
    code, stdout, err = run_script("scripts.pretrain", ["--from", demos["karpathy"], "--out", out, *PG_FLAGS],
                                   capsys)
    assert code == 0, err
    assert "val" in stdout and "--hidden 64 --init" in stdout
    agent = agents.load(out)
    info = agent.header["pretrained"]
    assert len(info["recordings"]) == 4 and info["val_games"] == 1
    assert info["val_accuracy"] >= info["val_majority"] + 0.1, info["history"]
    assert agent.header["step"] == 0 and agent.header["config"]["hidden"] == 64
    # a game it never saw, in the real env: the teacher plays, the clone says what it would do
    agree, majority = agreement_on_a_new_game(lambda obs: int(agent.act(obs[None], explore=False)[0][0]),
                                              "pong", "karpathy", teacher)
    assert agree >= majority + 0.15, (agree, majority)
    run_dir = str(tmp_path / "rl")
    code, _, err = run_script("scripts.train", ["--agent", "pg", "--init", out, "--hidden", "64", "--num-envs", "2",
                                                "--batch-steps", "200", "--total-steps", "400", "--quiet",
                                                "--run-dir", run_dir], capsys)
    assert code == 0, err
    assert agents.load(os.path.join(run_dir, "checkpoint.npz")).header["step"] >= 400


@pytest.mark.parametrize("dueling", ["false", "true"])
def test_dqn_clone_and_init(dueling, demos, tmp_path, capsys):
    out = str(tmp_path / "dqn.npz")
    code, stdout, err = run_script("scripts.pretrain", ["--from", demos["sweeps"], "--agent", "dqn",
                                                        "--dueling", dueling, "--out", out, *DQN_FLAGS], capsys)
    assert code == 0, err
    agent = agents.load(out)
    info = agent.header["pretrained"]
    history = info["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    # measured: 0.99 to 1.0 on the held-out recording and 0.99 on the new game, where the commonest
    # action scores 0.53 to 0.54 (pretrain seeds 0-2, either head)
    assert info["val_accuracy"] >= info["val_majority"] + MARGIN, history
    assert info["batch_size"] == 32
    assert agent.kind == "dqn" and agent.header["n_actions"] == 4 and "target" in agent.header["models"]
    assert agent.header["config"]["dueling"] == (dueling == "true")
    agree, majority = agreement_on_a_new_game(
        lambda obs: int(dqn.q_values(agent.model, obs[None], agent.obs_scale).argmax()),  # greedy: no epsilon
        "breakout", "deepmind", sweeper())
    assert agree >= majority + MARGIN, (agree, majority)
    code, _, err = run_script("scripts.train", ["--agent", "dqn", "--game", "breakout", "--init", out, "--hidden", "32",
                                                "--total-steps", "200", "--learning-starts", "100",
                                                "--buffer-size", "1000", "--batch-size", "8",
                                                "--eval-every", "0", "--quiet",
                                                "--run-dir", str(tmp_path / "rl")], capsys)
    assert code == 0, err
    header = agents.load(str(tmp_path / "rl" / "checkpoint.npz")).header
    assert header["step"] == 200 and header["config"]["dueling"] == (dueling == "true")  # the clone's head


# ----------------------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def bad(demos, tmp_path_factory):
    """Recordings that cannot teach a Pong agent, each in its own folder."""
    root = tmp_path_factory.mktemp("bad")
    made = {}

    def folder(name):
        (root / name).mkdir()
        made[name] = str(root / name)
        return root / name

    play(folder("breakout") / "b.npz", "deepmind", 0, 10, game="breakout", policy=lambda env, preset: 0)
    play(folder("noops") / "n.npz", "deepmind", 0, 10, noop_max=0, policy=lambda env, preset: 0)
    source = first_file(demos["karpathy"])
    arrays, header = read_npz(source)
    arrays["actions"] = arrays["actions"].copy()
    arrays["actions"][5:40] = 5 - arrays["actions"][5:40]  # the other way: checksums fit, replay does not
    header["data_crc32"] = data_crc32(arrays)
    write_npz(folder("diverges") / "d.npz", arrays, header)
    arrays, header = read_npz(source)
    header["env_kwargs"]["frameskip"] = 2
    write_npz(folder("frameskip") / "f.npz", arrays, header)
    with open(source, "rb") as f:
        blob = f.read()
    (folder("truncated") / "t.npz").write_bytes(blob[: len(blob) // 2])
    folder("empty")
    made["text"] = str(root / "notes.txt")
    (root / "notes.txt").write_text("not a recording\n")
    return made


BAD = [
    (["--from", "{breakout}"], "ALE/Breakout-v5"),
    (["--from", "{diverges}"], "diverged"),
    (["--from", "{truncated}"], "not a valid .npz"),
    (["--from", "{frameskip}"], "frameskip 2"),
    (["--from", "{noops}"], "no usable samples"),
    (["--from", "{empty}"], "no recordings"),
    (["--from", "{text}"], "not a valid .npz"),
    (["--from", "/nonexistent/games"], "no such file"),
    (["--from", "{karpathy}", "--game", "pongg"], "did you mean pong"),
    (["--from", "{karpathy}", "--game", "CartPole-v1"], "Atari"),
    (["--from", "{karpathy}", "--agent", "dqn", "--preset", "karpathy"], "deepmind"),
    (["--from", "{karpathy}", "--epochs", "0"], "epochs"),
    (["--from", "{karpathy}", "--dueling", "true"], "dueling is a dqn option"),
    (["--from", "{karpathy}", "--val-fraction", "0.9"], "val_fraction"),
    (["--from", "{karpathy}", "--lr", "-1"], "lr"),
    (["--from", "{karpathy}", "--out", "{empty}"], "is a directory"),
    (["--from", "{karpathy}", "--out", "/nonexistent/dir/x.npz"], "does not exist"),
    (["--from", "{karpathy}", "--agent", "a2c"], "invalid choice"),
    (["--from", "{karpathy}", "--blas-threads", "0"], "--blas-threads"),
]


@pytest.mark.parametrize("argv, says", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_one_line_exit_2(argv, says, demos, bad, tmp_path, capsys):
    names = {**bad, **{k: v for k, v in demos.items() if isinstance(v, str)}}
    argv = [a.format(**names) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out.npz")]
    code, _, err = run_script("scripts.pretrain", argv, capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert says.lower() in lines[0].lower(), lines[0]
    assert not os.path.exists(tmp_path / "out.npz")


def test_pretrained_header_is_json_and_names_its_recordings(demos, tmp_path):
    out = tmp_path / "one.npz"
    summary = pretrain.pretrain(pretrain.Config(agent="pg", hidden=8, epochs=1), [first_file(demos["karpathy"])],
                                str(out))
    assert summary["val_games"] == 1 and summary["train_samples"] + summary["val_samples"] == summary["samples"]
    header = agents.load(str(out)).header
    assert json.loads(json.dumps(header["pretrained"])) == header["pretrained"]
    assert header["pretrained"]["recordings"][0]["path"] == os.path.abspath(first_file(demos["karpathy"]))
