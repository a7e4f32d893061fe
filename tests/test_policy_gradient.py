import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import agents
from agents import policy_gradient as pg
from agents.run import NumericalError, Run, config_dict, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARTPOLE = dict(game="CartPole-v1", num_envs=8, batch_steps=2000, optimizer="adam", lr=0.01, hidden=64)


def returns_of(run_dir):
    with open(os.path.join(run_dir, "progress.csv")) as f:
        return [float(r["return"]) for r in csv.DictReader(f)]


def train_cartpole(tmp_path, **overrides):
    cfg = pg.resolved(pg.Config(**{**CARTPOLE, **overrides}))
    run = Run(tmp_path / "run", config_dict(cfg), {"env_id": "CartPole-v1", "preset": "classic"},
              message=lambda text: None)
    run.write_config()
    pg.train(cfg, run)
    return run


def test_discounted_returns_restart_at_each_point():
    r = [0, 0, 1, 0, -1]
    got = pg.discounted_returns(r, 0.5, reset_on_reward=True)
    np.testing.assert_allclose(got, [0.25, 0.5, 1.0, -0.5, -1.0])
    got = pg.discounted_returns(r, 0.5, reset_on_reward=False)
    np.testing.assert_allclose(got, [0.25 - 1 / 16, 0.5 - 1 / 8, 1 - 1 / 4, -0.5, -1.0])


def test_sample_actions_follows_probabilities():
    rng = np.random.default_rng(0)
    probs = np.tile([[0.2, 0.5, 0.3]], (20000, 1))
    counts = np.bincount(pg.sample_actions(probs, rng), minlength=3) / 20000
    np.testing.assert_allclose(counts, [0.2, 0.5, 0.3], atol=0.02)


def test_sigmoid_head_gradient_is_reinforce():
    """The update pushes up the log-probability of actions with positive advantage."""
    rng = np.random.default_rng(0)
    cfg = pg.resolved(pg.Config(game="pong", hidden=8, lr=1e-2, optimizer="adam"))
    learner = pg.Learner(cfg, 16, 2, rng)
    pattern = rng.normal(size=16).astype(np.float32)
    obs = np.r_[np.tile(pattern, (32, 1)), np.tile(-pattern, (32, 1))]  # two distinct situations
    actions = np.ones(64, dtype=np.int64)
    returns = np.r_[np.ones(32), -np.ones(32)].astype(np.float32)
    p_before = pg.action_probs(learner.model, obs, "sigmoid")[:, 1]
    for _ in range(20):
        learner.update(obs, actions, returns)
    p_after = pg.action_probs(learner.model, obs, "sigmoid")[:, 1]
    assert p_after[:32].mean() > p_before[:32].mean() + 0.1
    assert p_after[32:].mean() < p_before[32:].mean() - 0.1


def test_pg_learns_cartpole(tmp_path):
    run = train_cartpole(tmp_path, total_steps=160_000, seed=0)
    returns = returns_of(run.dir)
    assert np.mean(returns[-20:]) >= 450, returns[-20:]
    with open(os.path.join(run.dir, "metrics.csv")) as f:
        updates = list(csv.DictReader(f))  # one row per update: step, loss, gradient norm
    steps = [int(u["step"]) for u in updates]  # an update waits for 2000 steps of whole episodes
    assert len(steps) >= 50 and steps == sorted(set(steps))
    assert all(float(u["grad_norm"]) > 0 for u in updates)
    assert [int(u["skipped"]) for u in updates] == [0] * len(updates)
    agent = agents.load(run.checkpoint_path)
    from agents.evaluation import evaluate
    assert evaluate(agent, 3, seed=100, explore=True)["mean_return"] >= 400


def test_nan_update_is_skipped_and_stops_after_a_few(tmp_path):
    cfg = pg.resolved(pg.Config(**CARTPOLE, max_bad_updates=3, total_steps=50_000))
    run = Run(tmp_path / "run", config_dict(cfg), {"env_id": "CartPole-v1", "preset": "classic"},
              message=lambda text: None)
    original = pg.Learner.update

    def poisoned(self, obs, actions, returns):
        obs = obs.copy()
        obs[0, 0] = np.nan
        return original(self, obs, actions, returns)

    pg.Learner.update = poisoned
    try:
        with pytest.raises(NumericalError):
            pg.train(cfg, run)
    finally:
        pg.Learner.update = original
    assert not os.path.exists(run.checkpoint_path)


def script(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_train_resume_and_evaluate_scripts(tmp_path):
    run_dir = tmp_path / "cp"
    out = script("scripts.train", "--agent", "pg", "--game", "CartPole-v1", "--total-steps", "4000", "--num-envs", "4",
                 "--hidden", "16", "--batch-steps", "500", "--run-dir", str(run_dir), "--quiet")
    assert out.returncode == 0, out.stderr
    _, header, _ = load_checkpoint(run_dir / "checkpoint.npz")
    assert header["step"] >= 4000
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["hidden"] == 16 and "gymnasium" in config["versions"]
    assert (run_dir / "curve.png").exists()
    episodes_before = header["episode"]

    # a flag given on resume overrides the saved setting (here a lower learning rate)
    out = script("scripts.train", "--resume", str(run_dir), "--total-steps", "8000", "--lr", "0.0042", "--quiet")
    assert out.returncode == 0, out.stderr
    _, header2, rest = load_checkpoint(run_dir / "checkpoint.npz")
    assert header2["step"] >= 8000 and header2["episode"] > episodes_before
    assert header2["optim"]["t"] > header["optim"]["t"]
    assert header["optim"]["lr"] != 0.0042 and header2["optim"]["lr"] == 0.0042
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["lr"] == 0.0042 and "--lr" in config["resumes"][-1]["command"]
    assert config["resumes"][-1]["step"] == header["step"]  # the step the new rate took over from
    assert any(k.startswith("optim.") for k in rest)
    rows = list(csv.DictReader(open(run_dir / "progress.csv")))
    assert [int(r["episode"]) for r in rows] == list(range(1, len(rows) + 1))

    out = script("scripts.evaluate", str(run_dir / "checkpoint.npz"), "--episodes", "2", "--seed", "5")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["game"] == "CartPole-v1"
    assert result["min_return"] <= result["mean_return"] <= result["max_return"] and result["actions"] == "sampled"


@pytest.mark.parametrize("args, words", [
    (["scripts.train", "--game", "pongg"], "did you mean pong"),
    (["scripts.train", "--lr", "abc"], "--lr"),
    (["scripts.train", "--agent", "a2c"], "unknown agent"),
    (["scripts.train", "--resume", "/nonexistent/run"], "no such run dir"),
    (["scripts.train", "--init", "/nonexistent.npz"], "no such file"),
    (["scripts.train", "--num-envs", "0"], "num_envs"),
    (["scripts.evaluate", "/nonexistent.npz"], "no such file"),
    (["scripts.evaluate", "README.md"], "not a valid .npz"),
    (["scripts.evaluate", "tests"], "directory"),
])
def test_bad_command_lines_exit_2_with_one_line(args, words):
    out = script(*args, timeout=60)
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert words in lines[0]


def test_checkpoint_for_another_game_is_refused(tmp_path):
    run_dir = tmp_path / "cp"
    out = script("scripts.train", "--game", "CartPole-v1", "--total-steps", "500", "--num-envs", "2",
                 "--hidden", "8", "--run-dir", str(run_dir), "--quiet")
    assert out.returncode == 0, out.stderr
    out = script("scripts.train", "--game", "Acrobot-v1", "--init", str(run_dir / "checkpoint.npz"),
                 "--run-dir", str(tmp_path / "other"), "--quiet", timeout=60)
    assert out.returncode == 2 and "is for CartPole-v1" in out.stderr, out.stderr
    assert not (tmp_path / "other").exists()


def test_bench_pg_prints_both_speeds_and_their_ratio():
    out = script("scripts.bench", "pg", "--game", "CartPole-v1", "--num-envs", "2", "--steps", "3000",
                 "--batch-steps", "1000", timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    env_row, train_row = result["rows"]
    assert env_row["steps_per_s"] > train_row["steps_per_s"] > 0
    assert abs(result["ratio"] - train_row["steps_per_s"] / env_row["steps_per_s"]) < 1e-3


def test_learning_curve_of_a_run_with_no_finished_episode(tmp_path):
    """A short run (a benchmark, an early Ctrl-C) still gets its curve, without matplotlib warnings."""
    import warnings
    from agents.curve import plot_progress
    progress = tmp_path / "progress.csv"
    progress.write_text("step,episode,return,length,running_mean,wall_seconds\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_progress(str(progress), str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
