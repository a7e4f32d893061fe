"""Runs that are killed, disks that fill up: nothing may lose more than one checkpoint interval."""
import errno
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

from agents import policy_gradient as pg
from agents import run as run_module
from agents.run import Run, config_dict, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# checkpoints every 0.06 s, Adam state included: writes are frequent and take a while
TRAIN = ["--agent", "pg", "--game", "CartPole-v1", "--num-envs", "2", "--hidden", "2000", "--batch-steps", "200",
         "--optimizer", "adam", "--checkpoint-minutes", "0.001", "--quiet"]


def start(args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-m", "scripts.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.0005)
    return False


def test_sigkill_at_random_moments_never_loses_the_run(tmp_path):
    rng = random.Random(0)
    run_dir = str(tmp_path / "run")
    ckpt = os.path.join(run_dir, "checkpoint.npz")
    last_step, kills, mid_write = -1, 0, 0
    for attempt in range(22):
        args = TRAIN + (["--resume", run_dir] if os.path.exists(ckpt) else ["--run-dir", run_dir])
        proc = start(args)
        before = os.stat(ckpt).st_mtime_ns if os.path.exists(ckpt) else 0
        # wait until this process has written at least one checkpoint of its own
        assert wait_for(lambda: os.path.exists(ckpt) and os.stat(ckpt).st_mtime_ns != before), \
            proc.stderr.read() if proc.poll() is not None else "no checkpoint written"
        if attempt % 3 == 0:  # aim at a write: kill the moment a temp file exists
            wait_for(lambda: any(n.startswith(".tmp-") for n in os.listdir(run_dir)), timeout=5)
        else:
            time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        mid_write += any(n.startswith(".tmp-") for n in os.listdir(run_dir))
        _, header, _ = load_checkpoint(ckpt)  # must load after every kill
        assert header["step"] >= last_step
        last_step = header["step"]
    assert kills >= 20
    assert mid_write >= 3, f"only {mid_write} kills landed during a write"
    # and the run still resumes, goes forward, and cleans the temp files the kills left
    proc = start(TRAIN + ["--resume", run_dir, "--total-steps", str(last_step + 2000),
                          "--checkpoint-minutes", "5"])
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    _, header, _ = load_checkpoint(ckpt)
    assert header["step"] >= last_step + 2000
    assert not any(n.startswith(".tmp-") for n in os.listdir(run_dir))


def test_sigterm_sighup_and_ctrl_c_save_then_exit_0(tmp_path):
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        run_dir = str(tmp_path / f"run-{sig}")
        proc = start(TRAIN[:-3] + ["--checkpoint-minutes", "60", "--quiet", "--run-dir", run_dir])
        assert wait_for(lambda: os.path.exists(os.path.join(run_dir, "progress.csv")) and
                        os.path.getsize(os.path.join(run_dir, "progress.csv")) > 200)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()
        assert "saved" in err and "checkpoint.npz" in err and "Traceback" not in err
        _, header, _ = load_checkpoint(os.path.join(run_dir, "checkpoint.npz"))
        assert header["step"] > 0


def test_closing_the_terminal_saves_the_run(tmp_path):
    """SIGHUP with the terminal already gone (its pipes closed: every write fails): the run saves as on
    SIGTERM, exits 0, and loses nothing since its last checkpoint (an hour away here)."""
    run_dir = str(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "scripts.train", *TRAIN[:-3], "--checkpoint-minutes", "60",
                             "--run-dir", run_dir], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    progress = os.path.join(run_dir, "progress.csv")
    assert wait_for(lambda: os.path.exists(progress) and os.path.getsize(progress) > 200)
    proc.stdout.close()
    proc.stderr.close()
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=60) == 0
    _, header, _ = load_checkpoint(os.path.join(run_dir, "checkpoint.npz"))
    with open(progress) as f:
        episodes = sum(1 for _ in f) - 1
    assert header["step"] > 0 and header["episode"] == episodes


def window_program(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy",
           "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_ctrl_c_in_watch_play_and_replay_exits_0_quietly(tmp_path):
    """Ctrl-C in a window program ends it with exit code 0 and no traceback; play keeps the game cut short."""
    from envs import recording
    rng = np.random.default_rng(0)
    recording.record("pong", lambda obs: int(rng.integers(2)), tmp_path / "game.npz", preset="karpathy",
                     max_steps=600)
    procs = {"watch": window_program(["scripts.watch", os.path.join(ROOT, "checkpoints", "pong-pg.npz"),
                                      "--episodes", "1"], tmp_path),
             "play": window_program(["scripts.play", "--out", "games", "--fps", "0", "--seed", "1"], tmp_path),
             "replay": window_program(["scripts.replay", "game.npz"], tmp_path)}
    time.sleep(8)  # all three in their loops: a ROM loaded, a window open, games under way
    deadline = time.monotonic() + 90  # a loaded machine starts them slowly: wait for play's first whole game
    games = tmp_path / "games"
    while time.monotonic() < deadline and not (games.is_dir() and any(n.endswith(".npz") for n in os.listdir(games))):
        time.sleep(0.5)
    for proc in procs.values():
        proc.send_signal(signal.SIGINT)
    outs = {}
    for name, proc in procs.items():
        outs[name], err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "Traceback" not in err and "KeyboardInterrupt" not in err, (name, err)
    saved = sorted(os.listdir(tmp_path / "games"))  # whole games (--fps 0 is quick), then the one cut short
    assert saved and all(recording.load(tmp_path / "games" / n) for n in saved)  # every one whole and loadable
    rows = outs["play"].strip().splitlines()
    assert len(rows) == len(saved) and all(n in row for n, row in zip(saved, rows)), outs["play"]
    # a Ctrl-C in mid-game keeps that game, marked; one that lands between two games has none to keep
    if rows[-1].endswith("(cut short)"):
        assert recording.load(tmp_path / "games" / saved[-1]).header["end"] is None
    else:
        assert recording.load(tmp_path / "games" / saved[-1]).header["end"] == "terminated"


def test_failed_checkpoint_write_keeps_old_file_and_training_goes_on(tmp_path, monkeypatch):
    cfg = pg.resolved(pg.Config(game="CartPole-v1", num_envs=2, hidden=8, batch_steps=200,
                                total_steps=400, checkpoint_minutes=0.0))
    messages = []
    run = Run(tmp_path / "run", config_dict(cfg), {"env_id": "CartPole-v1", "preset": "classic"},
              checkpoint_minutes=cfg.checkpoint_minutes, message=messages.append)
    real = run_module.save_checkpoint
    calls = {"n": 0}

    def flaky(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            return real(path, *args, **kwargs)
        if calls["n"] <= 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if calls["n"] <= 6:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(run_module, "save_checkpoint", flaky)
    # the first write succeeds; grab the file so we can check it survives the failures
    first = {}
    original_save = Run.save

    def spy(self, *a, **k):
        ok = original_save(self, *a, **k)
        if calls["n"] == 1:
            first["bytes"] = open(self.checkpoint_path, "rb").read()
        if 2 <= calls["n"] <= 6:
            assert open(self.checkpoint_path, "rb").read() == first["bytes"]
        return ok

    monkeypatch.setattr(Run, "save", spy)
    pg.train(cfg, run)
    assert run.failed_writes == 5 and calls["n"] > 6, (run.failed_writes, calls, messages[:3])
    failures = [m for m in messages if "could not write" in m]
    assert len(failures) == 5
    assert all(run.checkpoint_path in m and "\n" not in m for m in failures)
    assert "No space left on device" in failures[0] and "Permission denied" in failures[-1]
    _, header, _ = load_checkpoint(run.checkpoint_path)
    assert header["step"] >= 400


def test_failed_recording_write_is_reported_and_games_go_on(tmp_path, monkeypatch):
    import agents
    from agents.evaluation import evaluate
    from envs import recording
    cfg = pg.resolved(pg.Config(game="pong", num_envs=1, hidden=4, total_steps=8))
    run = Run(tmp_path / "run", config_dict(cfg), {"env_id": "ALE/Pong-v5", "preset": "karpathy"},
              message=lambda text: None)
    pg.train(cfg, run)
    agent = agents.load(run.checkpoint_path)

    def full_disk(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(recording.Recorder, "save", full_disk)
    messages = []
    from agents import evaluation
    monkeypatch.setattr(evaluation, "play_game", lambda agent, env, seed, explore, on_step=None: (
        env.reset(seed=seed), env.step(0), (-1.0, 1))[-1])
    summary = evaluate(agent, 2, record_dir=str(tmp_path / "games"), message=messages.append)
    assert summary["episodes"] == 2
    assert len(messages) == 2 and "No space left on device" in messages[0]
    assert str(tmp_path / "games") in messages[0]
    assert np.isfinite(summary["mean_return"])
