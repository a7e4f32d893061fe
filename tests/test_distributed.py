"""Ray actors (agents/distributed.py, and the actors of agents/dqn.py, agents/policy_gradient.py and
agents/ppo.py): rollouts, transitions and evaluations.

One local Ray (2 CPUs) serves the whole module; the trainings run in this process and find it
already started. Without Ray installed, only the checks that need no Ray run.
"""
import csv
import dataclasses
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import agents
import envs
from agents import dqn
from agents import policy_gradient as pg
from agents import ppo
from agents.evaluation import evaluate
from agents.replay import ReplayBuffer, SharedReplay
from agents.run import Run, config_dict, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='Ray is not installed: pip install -e ".[distributed]"')
INSTALL_LINE = 'error: --workers needs Ray: pip install -e ".[distributed]"'
# tests/test_policy_gradient.py's CartPole settings, its 8 envs as 2 workers of 4
PG_CARTPOLE = dict(game="CartPole-v1", num_envs=4, batch_steps=2000, optimizer="adam", lr=0.01, hidden=64,
                   workers=2)
# tests/test_ppo.py's CartPole settings, its 4 envs as 2 workers of 2
PPO_CARTPOLE = dict(game="CartPole-v1", num_envs=2, clip=0.2, lr=1e-3, epochs=4, minibatches=4, workers=2)
DQN_CARTPOLE = dict(game="CartPole-v1", seed=0, num_envs=2, hidden=64, n_step=3, lr=5e-4, adam_eps=1e-8,
                    buffer_size=10_000, learning_starts=500, batch_size=64, train_freq=2, target_update=250,
                    epsilon_steps=1000, total_steps=3000, eval_every=0, log_every=500, workers=2)


@pytest.fixture(scope="module")
def ray_session():
    from agents.distributed import start_ray
    ray, started = start_ray("", num_cpus=2)
    assert started
    yield ray
    ray.shutdown()


def make_run(path, cfg):
    run = Run(str(path), config_dict(cfg), envs.env_spec(cfg.game, cfg.preset, cfg.sticky), message=lambda text: None)
    run.write_config()
    return run


class Events:
    """Callback that keeps every event, with hooks by event name."""

    def __init__(self, **hooks):
        self.all, self.hooks = [], hooks

    def __call__(self, m):
        self.all.append(m)
        if m["event"] in self.hooks:
            self.hooks[m["event"]](m)

    def of(self, name):
        return [m for m in self.all if m["event"] == name]


def versions_by_worker(events):
    out = {}
    for m in events.of("rollout"):
        out.setdefault(m["worker"], []).append(m["version"])
    return out


def progress_rows(run_dir):
    with open(os.path.join(run_dir, "progress.csv")) as f:
        return list(csv.DictReader(f))


def our_actors(ray):
    return [name for name in ray.util.list_named_actors() if name.startswith("grok-arcade-")]


def no_actors_left(ray, seconds=10.0):
    end = time.monotonic() + seconds
    while our_actors(ray) and time.monotonic() < end:
        time.sleep(0.2)
    return not our_actors(ray)


# ----------------------------------------------------------------------------- policy gradient

@needs_ray
def test_pg_with_two_workers_learns_cartpole_and_weights_reach_them(ray_session, tmp_path):
    cfg = pg.resolved(pg.Config(**PG_CARTPOLE, total_steps=160_000, seed=0))
    run = make_run(tmp_path / "run", cfg)
    events = Events()
    pg.train(cfg, run, callback=events)
    returns = [float(r["return"]) for r in progress_rows(run.dir)]
    assert np.mean(returns[-20:]) >= 450, returns[-20:]
    updates = events.of("update")
    by_worker = versions_by_worker(events)
    assert sorted(by_worker) == [0, 1]
    for versions in by_worker.values():  # each actor's weights only move forward, and they do move
        assert versions == sorted(versions) and versions[0] == 0 and versions[-1] >= len(updates) - 2
    assert run.step >= 160_000 and sum(m["steps"] for m in events.of("rollout")) == run.step
    _, header, _ = load_checkpoint(run.checkpoint_path)
    assert header["step"] == run.step and header["optim"]["t"] == len(updates)
    assert no_actors_left(ray_session)


@needs_ray
def test_killed_actor_is_replaced_and_checkpoint_stays_consistent(ray_session, tmp_path):
    cfg = pg.resolved(pg.Config(**PG_CARTPOLE, total_steps=24_000, seed=1))
    run = make_run(tmp_path / "run", cfg)

    def kill_worker_0(m):
        if len(events.of("update")) == 2:
            name = next(n for n in our_actors(ray_session) if n.endswith("-0-0"))
            ray_session.kill(ray_session.get_actor(name))

    events = Events(update=kill_worker_0)
    pg.train(cfg, run, callback=events)
    lost = events.of("worker_lost")
    assert [m["worker"] for m in lost] == [0], lost
    later = [m for m in events.of("rollout") if m["worker"] == 0 and m["generation"] == 1]
    assert later and later[-1]["version"] > 2  # the replacement got the current weights
    assert run.step >= 24_000
    # only returned rollouts count: steps, episodes and the checkpoint agree with each other
    assert sum(m["steps"] for m in events.of("rollout")) == run.step
    _, header, _ = load_checkpoint(run.checkpoint_path)
    assert header["step"] == run.step and header["episode"] == run.episode == len(progress_rows(run.dir))
    assert header["optim"]["t"] == len(events.of("update"))
    agents.load(run.checkpoint_path)
    assert no_actors_left(ray_session)


@needs_ray
def test_stop_request_saves_and_ends_the_actors(ray_session, tmp_path):
    cfg = pg.resolved(pg.Config(**PG_CARTPOLE, seed=2))  # no step limit: only the stop ends it
    run = make_run(tmp_path / "run", cfg)
    events = Events(update=lambda m: setattr(run, "stop_requested", True))
    pg.train(cfg, run, callback=events)
    _, header, _ = load_checkpoint(run.checkpoint_path)
    assert header["step"] == run.step > 0 and header["optim"]["t"] == 1
    assert no_actors_left(ray_session)


# ----------------------------------------------------------------------------- PPO

@needs_ray
@pytest.mark.usefixtures("one_blas_thread")  # as the actors: CartPole's score at 200k steps moves with rounding
def test_ppo_with_two_workers_learns_cartpole_on_policy(ray_session, tmp_path):
    """Each round both actors play with the weights of every update so far, and the learner puts
    their rollouts side by side: CartPole is learned as with the 4 envs in one process."""
    cfg = ppo.resolved(ppo.Config(**PPO_CARTPOLE, total_steps=200_000, seed=0))
    run = make_run(tmp_path / "run", cfg)
    events = Events()
    ppo.train(cfg, run, callback=events)
    result = evaluate(agents.load(run.checkpoint_path, seed=1), 20, seed=1000, explore=True)
    assert result["mean_return"] >= 475, result
    rounds = len(events.of("update"))
    assert rounds == math.ceil(200_000 / (2 * 2 * cfg.num_steps))
    for versions in versions_by_worker(events).values():  # round k: the weights after k updates
        assert versions == list(range(rounds))
    assert sorted(versions_by_worker(events)) == [0, 1]
    assert sum(m["steps"] for m in events.of("rollout")) == run.step == rounds * 2 * 2 * cfg.num_steps
    _, header, _ = load_checkpoint(run.checkpoint_path)
    assert header["step"] == run.step and header["updates"] == rounds and "env_state" not in header
    assert no_actors_left(ray_session)


@needs_ray
def test_ppo_lost_actor_plays_its_round_again_and_a_stop_saves(ray_session, tmp_path):
    cfg = ppo.resolved(ppo.Config(**PPO_CARTPOLE, seed=1))  # no step limit: only the stop ends it

    def on_update(m):
        if len(events.of("update")) == 2:
            name = next(n for n in our_actors(ray_session) if n.endswith("-0-0"))
            ray_session.kill(ray_session.get_actor(name))
        if len(events.of("update")) == 4:
            run.stop_requested = True

    run = make_run(tmp_path / "run", cfg)
    events = Events(update=on_update)
    ppo.train(cfg, run, callback=events)
    assert [m["worker"] for m in events.of("worker_lost")] == [0]
    rollouts = events.of("rollout")
    assert [(m["worker"], m["generation"], m["version"]) for m in rollouts if m["worker"] == 0] == \
        [(0, 0, 0), (0, 0, 1), (0, 1, 2), (0, 1, 3)]  # the replacement plays round 3 with its weights
    assert sum(m["steps"] for m in rollouts) == run.step == 4 * 2 * 2 * cfg.num_steps
    _, header, _ = load_checkpoint(run.checkpoint_path)
    assert header["step"] == run.step and header["updates"] == 4
    assert header["episode"] == run.episode == len(progress_rows(run.dir))
    assert no_actors_left(ray_session)


# ----------------------------------------------------------------------------- DQN, Ape-X style

@needs_ray
def test_dqn_with_two_actors_fills_the_replay_and_trains(ray_session, tmp_path):
    cfg = dqn.resolved(dqn.Config(**{**DQN_CARTPOLE, "total_steps": 0}))  # no step limit: stopped below
    run = make_run(tmp_path / "run", cfg)

    def stop_once_both_have_played(m):  # on a busy machine one actor can start seconds after the other
        versions = versions_by_worker(events).values()
        both = len(versions) == 2 and all(v[-1] > v[0] for v in versions)
        if (run.step >= 3000 and both) or run.step >= 60_000:  # (the asserts below say which)
            run.stop_requested = True

    events = Events(update=stop_once_both_have_played)
    learner = dqn.train(cfg, run, callback=events)
    reports = events.of("update")
    assert [m["step"] for m in reports] == sorted(m["step"] for m in reports)
    assert reports[-1]["buffer"] >= 2900 and learner.updates >= 1000
    assert all(math.isfinite(m["loss"]) for m in reports if "loss" in m)
    by_worker = versions_by_worker(events)
    assert sorted(by_worker) == [0, 1]
    assert all(v == sorted(v) and v[-1] > v[0] for v in by_worker.values())
    _, header, _ = load_checkpoint(run.checkpoint_path)
    assert header["step"] == run.step >= 3000 and header["updates"] == learner.updates
    assert no_actors_left(ray_session)


def test_chunks_of_newest_frames_rebuild_the_same_replay(monkeypatch):
    """An actor sends only each observation's newest frame (and the final frames of ended games);
    the buffer it fills equals one filled from the whole stacks. No Ray: the actor class runs here."""
    cfg = dqn.resolved(dqn.Config(game="breakout", num_envs=2, buffer_size=4000, learning_starts=0,
                                  epsilon_steps=0, epsilon_end=1.0))
    config = dataclasses.asdict(cfg)

    def fill(newest):
        monkeypatch.setattr(dqn, "newest_frames", newest)
        worker = dqn.DQNWorker(config, 0, 7, [1.0, 1.0])
        rng = np.random.default_rng(0)
        buf = ReplayBuffer(4000, (4, 84, 84), np.uint8, 2, 4, 3, 0.99, rng)
        replay = SharedReplay([buf], rng)
        ended = 0
        for _ in range(3):
            chunk = worker.collect(300, 0)
            ended += len(chunk["final_at"])
            replay.add_chunk(0, chunk)
        worker.venv.close()
        return buf, ended

    newest = dqn.newest_frames
    whole, ended = fill(lambda obs, stack: obs)
    sent, _ = fill(newest)
    assert ended >= 1  # a game ended, so final frames were sent and put back
    for name in ("frames", "actions", "rewards", "terminal", "end", "first", "has_transition", "pos", "count"):
        np.testing.assert_array_equal(getattr(sent, name), getattr(whole, name), err_msg=name)


def test_apex_epsilons():
    eps = dqn.apex_epsilons(8)
    np.testing.assert_allclose([eps[0], eps[-1]], [0.4, 0.4 ** 8])
    assert np.all(np.diff(eps) < 0) and dqn.apex_epsilons(1).tolist() == [0.4]


# ----------------------------------------------------------------------------- scripts

@pytest.fixture(scope="module")
def cartpole_checkpoint(tmp_path_factory):
    cfg = pg.resolved(pg.Config(game="CartPole-v1", num_envs=4, hidden=16, batch_steps=500, total_steps=6000))
    run = make_run(tmp_path_factory.mktemp("cp") / "run", cfg)
    pg.train(cfg, run)
    return run.checkpoint_path


@needs_ray
def test_evaluate_with_workers_prints_the_same_games(ray_session, cartpole_checkpoint, capsys):
    from scripts import evaluate
    argv = [cartpole_checkpoint, "--episodes", "5", "--seed", "11", "--greedy"]
    assert evaluate.main(argv) == 0
    alone = capsys.readouterr().out.strip().splitlines()
    assert evaluate.main(argv + ["--workers", "2"]) == 0
    spread = capsys.readouterr().out.strip().splitlines()
    assert spread == alone and json.loads(spread[-1])["episodes"] == 5
    assert no_actors_left(ray_session)


@needs_ray
def test_ship_with_workers_scores_the_same_games(ray_session, cartpole_checkpoint, tmp_path, capsys):
    from scripts import ship
    argv = [os.path.dirname(cartpole_checkpoint), "--name", "cp", "--episodes", "4", "--seed", "5"]
    assert ship.main(argv + ["--out-dir", str(tmp_path / "alone")]) == 0
    alone = capsys.readouterr().out.strip().splitlines()
    assert ship.main(argv + ["--out-dir", str(tmp_path / "spread"), "--workers", "2"]) == 0
    spread = capsys.readouterr().out.strip().splitlines()
    # greedy games agree game for game; sampled ones draw from per-game streams (agents/distributed.py)
    scores = lambda line: {k: v for k, v in json.loads(line).items() if k != "checkpoint"}  # noqa: E731 (two out dirs)
    assert [json.loads(line)["actions"] for line in spread] == ["sampled", "greedy"]
    assert scores(spread[1]) == scores(alone[1])
    assert json.loads(spread[0])["episodes"] == 4
    text = (tmp_path / "spread" / "cp.md").read_text()
    assert "--episodes 4 --seed 5 --workers 2" in text and all(line in text for line in spread)
    assert "--workers" not in (tmp_path / "alone" / "cp.md").read_text().split("## Evaluation")[1]
    assert no_actors_left(ray_session)


@needs_ray
@pytest.mark.parametrize("agent", ["pg", "ppo"])
def test_bench_scale_times_each_agents_actors_in_rounds(ray_session, agent, capsys):
    """bench scale: the agent's own rollout code in process, then on 1 and 2 actors, each row with its
    speed and (for actors) its broadcast time; every actor is gone after its row."""
    from scripts import bench
    argv = ["scale", "--agent", agent, "--game", "CartPole-v1", "--num-envs", "2", "--steps", "600",
            "--workers", "1,2", "--broadcasts", "2"]
    assert bench.main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["bench"], out["agent"], out["game"]) == ("scale", agent, "CartPole-v1")
    assert [r["workers"] for r in out["rows"]] == [0, 1, 2]
    assert all(r["steps_per_s"] > 0 for r in out["rows"])
    assert all(r["broadcast_ms"] > 0 for r in out["rows"][1:]) and "broadcast_ms" not in out["rows"][0]
    assert no_actors_left(ray_session)


@needs_ray
def test_train_script_with_workers_saves_on_sigterm(tmp_path):
    """The command line end to end, with its own local Ray: SIGTERM stops, saves, shuts Ray down."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "scripts.train", "--agent", "pg", "--game", "CartPole-v1", "--workers", "2",
                             "--num-envs", "2", "--hidden", "16", "--batch-steps", "500", "--run-dir", str(run_dir),
                             "--quiet"], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if (run_dir / "progress.csv").exists() and len((run_dir / "progress.csv").read_text().splitlines()) > 20:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped by signal" in err and "Traceback" not in err, err
    _, header, _ = load_checkpoint(run_dir / "checkpoint.npz")
    assert header["config"]["workers"] == 2 and header["step"] > 0
    assert header["episode"] == len(progress_rows(run_dir))


@pytest.mark.parametrize("script, argv", [
    ("scripts.train", ["--agent", "pg", "--game", "CartPole-v1", "--workers", "2"]),
    ("scripts.evaluate", ["checkpoint.npz", "--workers", "2"]),
    ("scripts.ship", ["run", "--name", "x", "--workers", "2", "--out-dir", "shipped"]),
])
def test_workers_without_ray_is_one_line(script, argv, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as stop:
        module.main(argv + (["--run-dir", "run"] if script == "scripts.train" else []))
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [INSTALL_LINE]
    assert os.listdir(tmp_path) == []


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv, says", [
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--ray-address", "auto"], "--ray-address needs --workers"),
    pytest.param(["--workers", "2", "--ray-address", f"127.0.0.1:{closed_port()}"], "nothing answers at",
                 marks=needs_ray),
])
def test_bad_worker_flags_are_one_line(argv, says, tmp_path, monkeypatch, capsys):
    from scripts import train
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        train.main(["--agent", "pg", "--game", "CartPole-v1", "--run-dir", "run", *argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and says in lines[0], lines
    assert os.listdir(tmp_path) == []


def test_ray_is_imported_only_with_workers():
    code = ("import sys, agents.policy_gradient, agents.dqn, agents.distributed, scripts.train, "
            "scripts.evaluate; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
