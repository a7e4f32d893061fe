"""Every script, fed bad command lines: exit 2, one line, no traceback, nothing created or overwritten.

Scripts run in-process (main(argv)) from an empty working directory, so what they would create
there is seen, and a traceback would surface as an exception instead of a clean exit. Targets that
cannot be written are under /proc, where nobody may create a file, root included.
"""
import hashlib
import importlib
import importlib.util
import os

import numpy as np
import pytest

from agents import policy_gradient as pg
from agents.run import Run, config_dict
from envs import recording

CASES = []


def case(module, *argv, says, display=True):
    CASES.append(pytest.param(module, list(argv), says, display, id=f"{module.split('.')[-1]}:{' '.join(argv)}"[:90]))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small CartPole checkpoint, a Pong one, a corrupt file, a directory, a run without checkpoint."""
    root = tmp_path_factory.mktemp("inputs")
    made = {}
    for name, game, steps in (("cartpole", "CartPole-v1", 200), ("pong", "pong", 16)):
        cfg = pg.resolved(pg.Config(game=game, num_envs=2, hidden=4, total_steps=steps))
        run = Run(root / name, config_dict(cfg), {}, message=lambda text: None)
        run.write_config()
        pg.train(cfg, run)
        made[name] = str(root / name / "checkpoint.npz")
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip file at all" * 10)
    made["corrupt"] = str(root / "corrupt.npz")
    (root / "adir").mkdir()
    made["dir"] = str(root / "adir")
    made["run"] = str(root / "pong")
    (root / "empty-run").mkdir()
    (root / "empty-run" / "config.json").write_text('{"config": {"agent": "pg", "game": "pong"}}')
    made["empty_run"] = str(root / "empty-run")
    made["text"] = str(root / "notes.txt")
    (root / "notes.txt").write_text("hello\n")
    rng = np.random.default_rng(0)
    recording.record("pong", lambda obs: int(rng.integers(2)), root / "game.npz", preset="karpathy", max_steps=20)
    made["game"] = str(root / "game.npz")
    for name, text in (("unknown-key", "agent: dqn\nlearning_rate: 0.1\n"), ("bad-value", "agent: dqn\nlr: fast\n"),
                       ("bad-bool", "agent: dqn\ndueling: 3\n"), ("not-yaml", "lr: [1\n"), ("a-list", "- 1\n"),
                       ("pg-recipe", "agent: pg\nlr: 1.0e-3\n"), ("bad-schedule", "lr_schedule: 0:1e-3,5:-1\n"),
                       ("nan-value", "agent: ppo\nent_coef: .nan\n")):
        (root / f"{name}.yml").write_text(text)
        made[name.replace("-", "_")] = str(root / f"{name}.yml")
    return made


def fill(argv, files):
    return [a.format(**files) if "{" in a else a for a in argv]


def snapshot(*folders):
    out = {}
    for folder in folders:
        for dirpath, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(dirpath, name)
                out[path] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


# ------------------------------------------------------------------ the table
M = "scripts.train"
case(M, "--game", "pongg", says="did you mean pong")
case(M, "--game", "", says="game")
case(M, "--game", "Pendulum-v1", says="no agent here plays")  # continuous actions
case(M, "--agent", "dqn", "--game", "Blackjack-v1", says="no agent here plays")  # a tuple of observations
case(M, "--lr", "abc", says="--lr")
case(M, "--num-envs", "0", says="num_envs")
case(M, "--sticky", "maybe", says="true or false")
case(M, "--agent", "a2c", says="unknown agent")  # ppo is an agent now (agents/ppo.py)
case(M, "--preset", "fancy", says="preset")
case(M, "--preset", "classic", says="classic")
case(M, "--blas-threads", "0", says="--blas-threads")
case(M, "--resume", "/nonexistent/run", says="no such run dir")
case(M, "--resume", "{empty_run}", says="no checkpoint.npz")
case(M, "--resume", "{text}", says="no such run dir")
case(M, "--init", "/nonexistent.npz", says="no such file")
case(M, "--init", "{corrupt}", says="not a valid .npz")
case(M, "--init", "{dir}", says="directory")
case(M, "--init", "{text}", says="not a valid .npz")
case(M, "--agent", "pg", "--init", "{cartpole}", says="is for CartPole-v1")
case(M, "--agent", "pg", "--game", "CartPole-v1", "--init", "{pong}", says="is for ALE/Pong-v5")
case(M, "--agent", "dqn", "--init", "{pong}", says="is a pg checkpoint")
case(M, "--run-dir", "{run}", says="already holds a run")
case(M, "--resume", "{run}", "--run-dir", "{dir}", says="does not apply")
case(M, "--resume", "{run}", "--init", "{pong}", says="give one of them")
case(M, "--agent", "pg", "--init", "{pong}", "--hidden", "64", says="does not fit")
case(M, "--total-steps", "ten", says="--total-steps")
case(M, "--agent", "dqn", "--game", "CartPole-v1", "--quantiles", "-1", says="quantiles")
case(M, "--agent", "dqn", "--game", "CartPole-v1", "--eval-sticky", "maybe", says="--eval-sticky")
case(M, "--bogus-flag", says="unrecognized")
for agent in ("pg", "dqn", "ppo"):  # refused by every agent, not only the default one
    case(M, "--agent", agent, "--lr", "-0.1", says="lr must be > 0")
    case(M, "--agent", agent, "--lr", "0", says="lr must be > 0")
    case(M, "--agent", agent, "--total-steps", "-5", says="total_steps must be >= 0")
    case(M, "--agent", agent, "--hours", "-1", says="hours must be >= 0")
    case(M, "--agent", agent, "--hours", "nan", says="--hours: expected a finite number, got 'nan'")
    case(M, "--agent", agent, "--game", "CartPole-v1", "--seed", "-1", says="seed must be >= 0, got -1")
    case(M, "--agent", agent, "--lr", "inf", says="--lr: expected a finite number, got 'inf'")
    case(M, "--agent", agent, "--game", "PongNoFrameskip-v4", "--sticky", "true", says="no sticky actions")
    case(M, "--agent", agent, "--game", "ALE/Pong-v5", "--sticky", "false", says="means sticky actions")
    case(M, "--agent", agent, "--optimizer" if agent != "ppo" else "--network", "sgd", says="invalid choice")
case(M, "--agent", "dqn", "--lr-steps", "100", "--lr-end", "0", says="lr_end must be > 0")
case(M, "--agent", "dqn", "--lr-schedule", "0:1e-4", "--lr-steps", "100", "--lr-end", "1e-5", says="not both")
case(M, "--agent", "pg", "--lr-schedule", "0:1e-3,100:x", says="lr_schedule")
case(M, "--agent", "pg", "--lr-schedule", "100:1e-3,50:1e-4", says="increasing")
case(M, "--agent", "pg", "--batch-schedule", "0:0.5", says="batch_schedule")
case(M, "--config", "/nonexistent/recipe.yml", says="no such file")
case(M, "--config", "{unknown_key}", says="unknown key 'learning_rate' for agent dqn; did you mean lr?")
case(M, "--config", "{bad_value}", says="lr must be a finite number, got 'fast'")
case(M, "--config", "{bad_bool}", says="dueling must be true or false")
case(M, "--config", "{nan_value}", says="ent_coef must be a finite number, got nan")
case(M, "--config", "{not_yaml}", says="not valid YAML")
case(M, "--config", "{a_list}", says="mapping")
case(M, "--config", "{bad_schedule}", says="lr_schedule")
case(M, "--config", "{pg_recipe}", "--agent", "dqn", says="contradicts")
case(M, "--config", "{pg_recipe}", "--resume", "{run}", says="--config starts a new run")
case(M, "--config", "{text}", says="mapping")
case(M, "--game", "CartPole-v1", "--capture-video", says="Atari")
case(M, "--video-every", "5", says="--capture-video")
case(M, "--capture-video", "--video-every", "0", says="--video-every")
M = "scripts.evaluate"
case(M, "/nonexistent.npz", says="no such file")
case(M, "{corrupt}", says="not a valid .npz")
case(M, "{dir}", says="directory")
case(M, "{text}", says="not a valid .npz")
case(M, "{pong}", "--episodes", "0", says="--episodes")
case(M, "{pong}", "--seed", "x", says="--seed")
case(M, "{pong}", "--seed", "-3", says="--seed: expected a seed >= 0, got '-3'")
case(M, "{cartpole}", "--record", "games", says="Atari")
case(M, "{pong}", "--record", "{text}", says="not a directory")
case(M, "{pong}", "--epsilon", "0.01", says="DQN agent")
case(M, "{pong}", "--epsilon", "some", says="--epsilon")
case(M, "{pong}", "--epsilon", "nan", says="--epsilon: expected a finite number")
case(M, "{pong}", "--record", "/proc/games", "--episodes", "1", says="--record /proc/games: cannot write")
case(M, "{pong}", "--blas-threads", "0", says="--blas-threads")
case(M, says="checkpoint")
M = "scripts.watch"
case(M, "/nonexistent.npz", says="no such file")
case(M, "{corrupt}", says="not a valid .npz")
case(M, "{dir}", says="directory")
case(M, "{pong}", "--scale", "0", says="scale")
case(M, "{pong}", "--fps", "fast", says="--fps")
case(M, "{pong}", "--fps", "nan", says="--fps: expected a finite number")
case(M, "{pong}", "--fps", "-5", says="--fps: expected steps per second >= 0")
case(M, "{pong}", "--seed", "-1", says="--seed: expected a seed >= 0")
case(M, "{pong}", "--epsilon", "0.1", says="DQN agent")
case(M, "{pong}", says="SDL_VIDEODRIVER", display=False)
M = "scripts.replay"
case(M, "/nonexistent.npz", says="no such")
case(M, "{corrupt}", says="not a valid .npz")
case(M, "{pong}", says="not a grok-arcade recording")
case(M, "{dir}", says="no recordings")
case(M, "{game}", "--export", "/proc/game.mp4", says="--export /proc/game.mp4: cannot write")
case(M, "{game}", "--export", "/proc/game.gif", says="--export /proc/game.gif: cannot write")
case(M, "{game}", "--export", "/proc/videos/", says="--export /proc/videos/: cannot write")
M = "scripts.play"
case(M, "--game", "pongg", says="did you mean pong")
case(M, "--game", "pong", says="SDL_VIDEODRIVER", display=False)
case(M, "--out", "/proc/games", says="--out /proc/games: cannot write")
M = "scripts.inspect"
case(M, "/nonexistent.npz", "--out", "x.png", says="no such file")
case(M, "{corrupt}", "--out", "x.png", says="not a valid .npz")
case(M, "{dir}", "--out", "x.png", says="directory")
case(M, "{pong}", "--out", "/proc/model.png", says="--out /proc/model.png: cannot write")
case(M, "{dir}", "--milestones", says="not a run dir")
case(M, "{run}", "--compare", "{dir}", says="not a run dir")
case(M, "{run}", "--compare", "/nonexistent/run", says="/nonexistent/run: no such file or directory")
case(M, "{run}", "--milestones", "--levels", "high", says="--levels high")
case(M, "{run}", "--milestones", "--levels", "0,nan", says="--levels 0,nan")
M = "scripts.sanity"
case(M, "chess", says="invalid choice")
case(M, "digits", "--data-dir", "/nonexistent/data", says="/nonexistent/data")
case(M, "digits", "--epochs", "-1", says="epochs")
case(M, "sentiment", "--quick", "--epochs", "0", says="--epochs: must be >= 1")
case(M, "shakespeare", "--temperature", "inf", says="--temperature: expected a finite number")
M = "scripts.versus"
case(M, "/nonexistent.npz", "--human", says="no such")
case(M, "{pong}", "{pong}", "--games", "0", says="--games")
case(M, "{corrupt}", "{pong}", "--no-window", says="not a valid .npz")
M = "scripts.ship"
case(M, "/nonexistent/run", "--name", "x", says="not a run dir")
case(M, "{run}", "--name", "Bad Name!", says="--name")
case(M, "{run}", says="--name")
case(M, "{run}", "--name", "x", "--episodes", "0", says="--episodes")
case(M, "{run}", "--name", "x", "--compare", "{dir}", says="--compare")
case(M, "{run}", "--name", "x", "--episodes", "1", "--out-dir", "/proc/shipped",
     says="--out-dir /proc/shipped: cannot write")
M = "scripts.pretrain"
case(M, "--from", "/nonexistent/games", "--out", "x.npz", says="no such file")
case(M, "--from", "{dir}", "--out", "x.npz", says="no recordings")
case(M, "--from", "{corrupt}", "--out", "x.npz", says="not a valid .npz")
case(M, "--from", "{pong}", "--out", "x.npz", says="not a grok-arcade recording")
case(M, "--from", "{pong}", "--out", "x.npz", "--epochs", "0", says="epochs")
case(M, "--from", "{dir}", "--out", "c.txt", says="a checkpoint is an .npz file")
case(M, "--from", "{dir}", "--out", "x.npz", "--agent", "a2c", says="invalid choice")
case(M, "--from", "{dir}", says="--out")
M = "scripts.bench"
case(M, "gpu", says="invalid choice")
case(M, says="subcommand")
case(M, "nets", "--repeats", "many", says="--repeats")
case(M, "nets", "--repeats", "0", says="--repeats: must be >= 1")
case(M, "nets", "--torch-threads", "0", says="--torch-threads: must be >= 1")
case(M, "envs", "--seconds", "-1", says="--seconds: must be > 0")
case(M, "pg", "--game", "CartPole-v1", "--steps", "100", says="less than one update")
case(M, "pg", "--game", "pongg", says="unknown game")
case(M, "pg", "--num-envs", "0", says="num_envs")
case(M, "dqn", "--num-envs", "0", says="num_envs")
case(M, "dqn", "--quantiles", "-1", says="quantiles")
case(M, "dqn", "--steps", "0", says="--steps")
case(M, "scale", "--workers", "x", says="--workers")
case(M, "scale", "--game", "pongg", says="unknown game")
case(M, "scale", "--agent", "ppo", "--num-envs", "0", says="num_envs")
case(M, "scale", "--agent", "a2c", says="invalid choice")
case(M, "scale", "--broadcasts", "0", says="--broadcasts")
case(M, "dqn", "--blas-threads", "0", says="--blas-threads")
case(M, "dqn", "--vs-torch", "--updates", "0", says="--updates")
case(M, "dqn", "--vs-torch", "--game", "CartPole-v1", says="Atari")
case(M, "evaluate", "{pong}", "--games", "0", says="--games")
case(M, "evaluate", "{corrupt}", says="not a valid .npz")
case(M, "threads", "--rounds", "0", says="--rounds")


@pytest.mark.parametrize("module, argv, says, display", CASES)
def test_bad_command_line(module, argv, says, display, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if not display:
        monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
        monkeypatch.delenv("DISPLAY", raising=False)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    argv = fill(argv, files)
    before = snapshot(tmp_path, os.path.dirname(files["corrupt"]))
    main = importlib.import_module(module).main
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert says.lower() in lines[0].lower(), lines[0]
    assert snapshot(tmp_path, os.path.dirname(files["corrupt"])) == before


def test_the_table_covers_every_script():
    covered = {p.values[0] for p in CASES}
    scripts = {f"scripts.{n[:-3]}" for n in os.listdir(os.path.join(os.path.dirname(__file__), "..", "scripts"))
               if n.endswith(".py") and not n.startswith(("_", "bench_", "common", "viewer"))}
    assert scripts <= covered, scripts - covered
    assert len(CASES) >= 40


# ------------------------------------------------------------------ without the optional packages
WITHOUT = [
    ("ray", "scripts.bench", ["scale"], "pip install"),
    ("ray", "scripts.train", ["--agent", "pg", "--game", "CartPole-v1", "--workers", "2"], "needs Ray"),
    ("tensorboardX", "scripts.train", ["--game", "CartPole-v1", "--tensorboard"], "--tensorboard needs tensorboardX"),
]


@pytest.mark.parametrize("package, module, argv, says", WITHOUT, ids=[f"{m}:{' '.join(a)}" for _, m, a, _ in WITHOUT])
def test_without_an_optional_package(package, module, argv, says, tmp_path, monkeypatch, capsys):
    """An extra that is not installed is one line that says how to install it, before anything starts."""
    monkeypatch.chdir(tmp_path)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else find_spec(name, *a))
    try:
        code = importlib.import_module(module).main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert says in lines[0] and not os.listdir(tmp_path)
