"""scripts.train as a newcomer from RL Zoo or CleanRL meets it: the env ids they type, recipes in
hyperparams/ with learning-rate schedules, TensorBoard and videos, help from the Config comments and
a progress bar that tells the time. Every agent (pg, dqn, ppo) is held to the same rules."""
import dataclasses
import glob
import io
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import envs
from agents import dqn, ppo
from agents import policy_gradient as pg
from agents.recipes import read_recipe, recipe_changes
from agents.run import Run, checkpoint_header, config_dict
from agents.schedule import parse_schedule, scheduled
from scripts import train
from scripts.common import field_comments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENTS = {"pg": pg, "dqn": dqn, "ppo": ppo}
pytestmark = pytest.mark.usefixtures("one_blas_thread")


def run_main(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        return train.main(argv)
    except SystemExit as e:
        return e.code


# ----------------------------------------------------------------------------- env ids

@pytest.mark.parametrize("typed, env_id, sticky", [
    ("PongNoFrameskip-v4", "ALE/Pong-v5", False), ("BreakoutNoFrameskip-v4", "ALE/Breakout-v5", False),
    ("Pong-v4", "ALE/Pong-v5", False), ("ALE/Pong-v5", "ALE/Pong-v5", True), ("Pong-v5", "ALE/Pong-v5", True),
    ("pong-v5", "ALE/Pong-v5", True), ("Pong-v0", "ALE/Pong-v5", True), ("pong", "ALE/Pong-v5", None),
    ("breakout", "ALE/Breakout-v5", None), ("CartPole-v1", "CartPole-v1", None)])
def test_env_ids_of_sb3_cleanrl_and_gymnasium_map_to_a_game_and_a_protocol(typed, env_id, sticky):
    assert envs.resolve(typed) == env_id
    assert envs.atari.atari_alias(typed) == (None if sticky is None else (env_id, sticky))


@pytest.mark.parametrize("agent", list(AGENTS))
def test_step_counts_as_people_write_them(agent):
    """CleanRL's 10000000, Python's 10_000_000 and the zoo's 1e7 are the same budget; 1.5 is no count."""
    parser = train.build_parser(AGENTS[agent])
    for text in ("10000000", "10_000_000", "1e7", "1.0e7"):
        assert parser.parse_args(["--total-steps", text]).total_steps == 10_000_000
    for text in ("1.5", "1e7x", "nan", "inf", ""):
        with pytest.raises(SystemExit):
            parser.parse_args(["--total-steps", text])


@pytest.mark.parametrize("agent", list(AGENTS))
def test_an_id_sets_the_protocol_and_config_json_says_which(agent, tmp_path, monkeypatch):
    """PongNoFrameskip-v4 trains without sticky actions (it crashed before: a 94 GiB replay buffer
    for dqn, a ValueError for pg); config.json keeps the id typed and where the protocol came from."""
    small = {"pg": ["--num-envs", "1", "--hidden", "4"], "dqn": ["--learning-starts", "40", "--buffer-size", "200"],
             "ppo": ["--num-envs", "1", "--num-steps", "8", "--minibatches", "1"]}[agent]
    code = run_main(["--agent", agent, "--game", "PongNoFrameskip-v4", "--total-steps", "8", "--run-dir", "r",
                     "--quiet", *small], tmp_path, monkeypatch)
    assert code == 0
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    assert record["game"] == {"typed": "PongNoFrameskip-v4", "env_id": "ALE/Pong-v5", "protocol": "v4-nosticky",
                              "protocol_from": "the env id PongNoFrameskip-v4"}
    assert record["config"]["sticky"] is False and record["env"]["repeat_action_probability"] == 0.0
    assert checkpoint_header(tmp_path / "r" / "checkpoint.npz")["env"]["protocol"] == "v4-nosticky"


def test_list_games_lists_what_the_agents_play_and_survives_head():
    games = envs.atari.playable_games()
    names = [row[0] for row in games]
    assert "pong" in names and "CartPole-v1" in names and "Pendulum-v1" not in names
    assert "MountainCarContinuous-v0" not in names
    assert ("pong", "ALE/Pong-v5", "PongNoFrameskip-v4") in games
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run(f"{sys.executable} -m scripts.train --list-games | head -1", shell=True, cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["adventure", "ALE/Adventure-v5", "AdventureNoFrameskip-v4"]
    assert proc.stderr == ""


# ----------------------------------------------------------------------------- recipes

SHIPPED = sorted(os.path.basename(p)[:-len(".npz")] for p in glob.glob(os.path.join(ROOT, "checkpoints", "*.npz")))


def test_every_shipped_agent_is_in_the_recipe_test():
    assert {"pong-pg", "pong-dqn", "breakout-dqn", "pong-ppo", "breakout-ppo"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_agent_has_its_recipe(name):
    """hyperparams/<name>.yml resolves to the shipped file's settings, network and protocol, and runs
    as many steps as the file holds, those of the file an --init run started from included."""
    settings = read_recipe(os.path.join(ROOT, "hyperparams", f"{name}.yml"))
    module = AGENTS[settings["agent"]]
    cfg = module.resolved(dataclasses.replace(module.Config(), **recipe_changes(module.Config, settings, name)))
    header = checkpoint_header(os.path.join(ROOT, "checkpoints", f"{name}.npz"))
    shipped = header["config"]
    for key in ("game", "preset", "sticky", "hidden", "gamma", "num_envs"):
        assert getattr(cfg, key) == shipped[key], key
    for key in ("optimizer", "dueling", "double", "n_step", "prioritized", "network", "eval_episodes", "buffer_size",
                "epochs", "minibatches", "clip", "clip_vloss", "ent_coef", "num_steps"):
        if key in shipped:
            assert getattr(cfg, key) == shipped[key], key
    if hasattr(cfg, "anneal_ent"):  # a file trained before the flag existed kept its entropy bonus
        assert cfg.anneal_ent == shipped.get("anneal_ent", False)
    before = header.get("trained_before", {}).get("step", 0)
    # PPO stops at the end of the round that reaches total_steps (8 envs x 128 steps a round)
    assert cfg.total_steps <= header["step"] + before < cfg.total_steps + getattr(cfg, "num_steps", 0) * cfg.num_envs + 1
    assert envs.env_spec(cfg.game, cfg.preset, cfg.sticky)["protocol"] == header["env"]["protocol"]
    schedule = parse_schedule(getattr(cfg, "lr_schedule", ""), "lr_schedule")
    assert scheduled(schedule, cfg.total_steps, cfg.lr) == shipped["lr"]  # the last learning rate shipped


def test_the_main_job_is_the_pong_ppo_recipe():
    """`python -m scripts.train` with no flags trains what hyperparams/pong-ppo.yml writes out."""
    settings = read_recipe(os.path.join(ROOT, "hyperparams", "pong-ppo.yml"))
    module = AGENTS[settings["agent"]]
    recipe = module.resolved(dataclasses.replace(module.Config(), **recipe_changes(module.Config, settings, "pong-ppo")))
    assert module is AGENTS[train.DEFAULT_AGENT] and dataclasses.asdict(recipe) == dataclasses.asdict(
        module.resolved(module.Config()))


def test_a_recipe_flags_over_it_and_a_run_config_json_starts_a_sibling(tmp_path, monkeypatch):
    (tmp_path / "r.yml").write_text("agent: dqn\ngame: CartPole-v1\nlr: 1e-3\nlearning_starts: 100\n"
                                    "buffer_size: 400\nlr_schedule: {0: 1e-3, 100: 5e-4}\n")
    assert run_main(["--config", "r.yml", "--total-steps", "200", "--seed", "3", "--run-dir", "a", "--quiet"],
                    tmp_path, monkeypatch) == 0
    first = json.loads((tmp_path / "a" / "config.json").read_text())
    assert first["config"]["agent"] == "dqn" and first["config"]["lr"] == 1e-3 and first["config"]["seed"] == 3
    assert first["config"]["lr_schedule"] == "0:1e-3,100:5e-4" and first["recipe"]["path"] == "r.yml"
    assert run_main(["--config", "a/config.json", "--seed", "4", "--run-dir", "b", "--quiet"], tmp_path,
                    monkeypatch) == 0
    second = json.loads((tmp_path / "b" / "config.json").read_text())
    changed = {k for k in first["config"] if first["config"][k] != second["config"][k]}
    assert changed == {"seed"}


@pytest.mark.parametrize("module, fields", [
    (pg, dict(game="CartPole-v1", num_envs=4, hidden=16, total_steps=6000, batch_steps=500, seed=3)),
    (dqn, dict(game="CartPole-v1", total_steps=3000, learning_starts=500, buffer_size=2000, eval_every=0,
               target_update=200, seed=2))])
def test_a_schedule_changes_the_learning_rate_and_none_changes_nothing(module, fields, tmp_path):
    """An empty lr_schedule trains bit for bit as before it existed; one that holds lr throughout too;
    one that changes it gives other weights."""
    def weights(**extra):
        cfg = module.resolved(module.Config(**fields, **extra))
        run = Run(tmp_path / f"run-{len(os.listdir(tmp_path))}", config_dict(cfg), {}, message=lambda t: None)
        learner = module.train(cfg, run)
        model = getattr(learner, "model", None) or learner.online
        return np.concatenate([v.ravel() for _, v in sorted(model.state_dict().items())]), learner.opt.lr

    plain, _ = weights()
    same, _ = weights(lr_schedule=f"0:{module.Config().lr}")
    lowered, lr = weights(lr_schedule=f"0:{module.Config().lr},2000:1e-5")
    assert np.array_equal(plain, same) and not np.array_equal(plain, lowered) and lr == 1e-5


def test_pg_batch_schedule_grows_the_updates(tmp_path):
    cfg = pg.resolved(pg.Config(game="CartPole-v1", num_envs=2, hidden=8, total_steps=3000, batch_steps=200,
                                batch_schedule="0:200,1500:1000"))
    assert [pg.batch_steps_at(s, cfg) for s in (0, 1499, 1500, 10**9)] == [200, 200, 1000, 1000]
    run = Run(tmp_path / "run", config_dict(cfg), {}, message=lambda t: None)
    pg.train(cfg, run)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]]
    gaps = np.diff(steps)
    assert gaps[:3].max() < 400 and gaps[-1] >= 1000


def test_schedules_are_checked():
    assert parse_schedule("0:1e-3, 5_000:5e-4", "lr") == ((0, 1e-3), (5000, 5e-4))
    assert scheduled(((10, 1.0), (20, 2.0)), 5, 0.5) == 0.5 and scheduled(((10, 1.0), (20, 2.0)), 20, 0.5) == 2.0
    for bad, says in (("0:1e-3,0:1e-4", "increasing"), ("0=1", "STEP:VALUE"), ("0:0", "> 0"), ("-5:1", ">= 0")):
        with pytest.raises(ValueError, match=says):
            parse_schedule(bad, "lr_schedule")


# ----------------------------------------------------------------------------- TensorBoard and videos

def event_scalars(run_dir):
    """{tag: [(step, value)]} from the run's TensorBoard event files (their record format, read here)."""
    from tensorboardX.proto import event_pb2
    tags = {}
    for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        data, i = open(path, "rb").read(), 0
        while i < len(data):
            n = struct.unpack("<Q", data[i:i + 8])[0]
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append((event.step, value.simple_value))
    return tags


def test_tensorboard_holds_the_scalars_of_the_csv_files(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    assert run_main(["--agent", "dqn", "--game", "CartPole-v1", "--total-steps", "1500", "--learning-starts", "200",
                     "--buffer-size", "1000", "--log-every", "500", "--eval-every", "1000", "--eval-episodes", "2",
                     "--tensorboard", "--run-dir", "r", "--quiet"], tmp_path, monkeypatch) == 0
    tags = event_scalars(tmp_path / "r")
    progress = (tmp_path / "r" / "progress.csv").read_text().splitlines()[1:]
    assert [v for _, v in tags["charts/episodic_return"]] == [float(row.split(",")[2]) for row in progress]
    metrics = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    columns = [c for c in metrics[0].split(",") if c not in ("step", "wall_seconds")]
    assert {f"metrics/{c}" for c in columns} <= set(tags) and "metrics/loss" in tags
    assert [s for s, _ in tags["eval/mean_return"]] == [1000]


def test_capture_video_records_evaluation_games_into_videos(tmp_path, monkeypatch, capsys):
    assert run_main(["--agent", "pg", "--game", "pong", "--num-envs", "2", "--hidden", "8", "--total-steps", "4000",
                     "--batch-steps", "500", "--capture-video", "--video-every", "1", "--run-dir", "r", "--quiet"],
                    tmp_path, monkeypatch) == 0
    videos = sorted(os.listdir(tmp_path / "r" / "videos"))
    assert videos and all(v.endswith(".mp4") and os.path.getsize(tmp_path / "r" / "videos" / v) > 1000
                          for v in videos)
    assert sorted(os.listdir(tmp_path / "r" / "games")) == [v[:-4] + ".npz" for v in videos]
    assert "video of a game at episode" in capsys.readouterr().err


def test_capture_video_records_the_untrained_agent_first(tmp_path, monkeypatch, capsys):
    """With the default --video-every (100 episodes) a short run still has its first video: the game
    played at the start, as CleanRL's first video."""
    assert run_main(["--agent", "pg", "--game", "pong", "--num-envs", "2", "--hidden", "8", "--total-steps", "1000",
                     "--batch-steps", "500", "--capture-video", "--run-dir", "r", "--quiet"], tmp_path, monkeypatch) == 0
    assert sorted(os.listdir(tmp_path / "r" / "videos")) == ["episode-0000000.mp4"]


# ----------------------------------------------------------------------------- help

@pytest.mark.parametrize("agent", list(AGENTS))
def test_every_setting_has_its_meaning_in_help(agent, tmp_path, monkeypatch, capsys):
    comments = field_comments(AGENTS[agent].Config)
    assert all(comments[f.name] for f in dataclasses.fields(AGENTS[agent].Config)), comments
    assert run_main(["--agent", agent, "--help"], tmp_path, monkeypatch) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: pong)" in text and "--seed N" in text
    if agent != "ppo":
        assert "--optimizer {" in text
    assert {"pg": "--head {auto,sigmoid,softmax}", "dqn": "--network {auto,nature,mlp}",
            "ppo": "--network {auto,nature,small,mlp}"}[agent] in text
    assert "--preset {" in text and "{true,false}" in text


def test_help_without_an_agent_lists_every_agent(tmp_path, monkeypatch, capsys):
    assert run_main(["--help"], tmp_path, monkeypatch) == 0
    text = capsys.readouterr().out
    for agent in AGENTS:
        assert f"{agent} settings" in text and f"--agent {agent}" in text
    assert "sticky (pg true, dqn false, ppo true)" in text
    assert "--tensorboard" in text and "--capture-video" in text and "--config RECIPE" in text


# ----------------------------------------------------------------------------- the progress bar

# flags that make each agent's CartPole run of a few hundred steps learn and save quickly
SMALL_RUN = {"pg": ["--batch-steps", "200"], "dqn": ["--learning-starts", "200", "--buffer-size", "1000"],
             "ppo": ["--num-steps", "32"]}

def test_the_bar_knows_its_total_and_says_when_pong_is_won(capsys):
    bar = train.ProgressBar(total_steps=1000, hours=0, initial=0, quiet=False, env_id="ALE/Pong-v5")
    assert bar.bar.total == 1000
    for k in range(1, 131):
        mean = -0.5 if k < 120 else 0.3
        bar({"event": "episode", "step": 10 * k, "episode": k, "return": 1.0, "length": 10, "running_mean": mean,
             "games": min(k, 100), "wall_seconds": 3120.0})
    bar({"event": "eval", "step": 1000, "mean_return": 2.5, "std_return": 1.0, "episodes": 10})
    bar.close()
    err = capsys.readouterr().err
    said = [line for line in err.replace("\r", "\n").splitlines() if "beats the built-in AI" in line]
    assert said == ["step 1,200 (52 min): the running mean of the last 100 games is +0.3: it beats the built-in AI"]
    assert "evaluation at step 1,000: mean return +2.50 (std 1.00) over 10 games" in err
    timed = train.ProgressBar(total_steps=0, hours=2.0, initial=0, quiet=True, env_id="CartPole-v1")
    assert timed.bar.total == 7200.0
    resumed = train.ProgressBar(total_steps=0, hours=2.0, initial=500, quiet=False, env_id="CartPole-v1",
                                trained_seconds=3600.0)  # half the hours were trained before the resume
    resumed({"event": "update", "step": 600})
    assert 3600.0 <= resumed.bar.n < 3660.0
    resumed.close()


def test_a_resumed_run_that_had_beaten_the_ai_does_not_say_it_again(tmp_path, capsys):
    rows = ["step,episode,return,length,running_mean,wall_seconds"]
    rows += [f"{10 * k},{k},1,10,{-0.5 if k < 120 else 0.3},{60.0 * k}" for k in range(1, 131)]
    (tmp_path / "progress.csv").write_text("\n".join(rows) + "\n")
    assert train.beaten_before(str(tmp_path), 1300) and train.beaten_before(str(tmp_path), 1200)
    assert not train.beaten_before(str(tmp_path), 1190)  # a checkpoint from before it: say it when it comes
    assert not train.beaten_before(str(tmp_path / "none"), 1300)
    bar = train.ProgressBar(total_steps=2000, hours=0, initial=1300, quiet=False, env_id="ALE/Pong-v5",
                            beaten=train.beaten_before(str(tmp_path), 1300))
    bar({"event": "episode", "step": 1310, "episode": 131, "return": 1.0, "length": 10, "running_mean": 0.4,
         "games": 100, "wall_seconds": 7900.0})
    bar.close()
    assert "beats the built-in AI" not in capsys.readouterr().err


@pytest.mark.parametrize("agent", list(AGENTS))
def test_hours_are_the_runs_in_all_a_resumed_run_counts_its_trained_time(agent, tmp_path, monkeypatch):
    extra = SMALL_RUN[agent]
    assert run_main(["--agent", agent, "--game", "CartPole-v1", "--total-steps", "600", "--eval-every", "0",
                     "--run-dir", "r", "--quiet", *extra], tmp_path, monkeypatch) == 0
    saved = checkpoint_header(str(tmp_path / "r" / "checkpoint.npz"))
    assert saved["step"] >= 600 and saved["wall_seconds"] > 0
    # an hour budget the run has already used up: the resumed run stops at once, without a step more
    # (it used to start a new budget at every resume); a budget twice as long lets it go on
    used = saved["wall_seconds"] / 3600
    assert run_main(["--resume", "r", "--hours", f"{used:.9f}", "--total-steps", "1000000", "--quiet"],
                    tmp_path, monkeypatch) == 0
    assert checkpoint_header(str(tmp_path / "r" / "checkpoint.npz"))["step"] == saved["step"]
    assert run_main(["--resume", "r", "--hours", f"{2 * used + 1 / 3600:.9f}", "--total-steps", "1000000",
                     "--quiet"], tmp_path, monkeypatch) == 0
    again = checkpoint_header(str(tmp_path / "r" / "checkpoint.npz"))
    assert again["step"] > saved["step"] and again["wall_seconds"] >= 2 * saved["wall_seconds"]


@pytest.mark.parametrize("agent", list(AGENTS))
def test_every_agent_evaluates_whole_games_into_eval_csv(agent, tmp_path, monkeypatch, capsys):
    extra = SMALL_RUN[agent]
    assert run_main(["--agent", agent, "--game", "CartPole-v1", "--total-steps", "1200", "--eval-every", "500",
                     "--eval-episodes", "2", "--run-dir", "r", *extra], tmp_path, monkeypatch) == 0
    rows = (tmp_path / "r" / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("step,mean_return") and len(rows) == 3
    err = capsys.readouterr().err
    assert err.startswith("run dir: ") and err.splitlines()[0] == f"run dir: {tmp_path / 'r'}"
    assert err.count("evaluation at step") == 2


def test_the_run_dir_line_stands_alone_in_a_terminal_log(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "scripts.train", "--game", "CartPole-v1", "--total-steps", "3000",
                           "--run-dir", str(tmp_path / "r")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    first = io.StringIO(proc.stderr).readline()
    assert first == f"run dir: {tmp_path / 'r'}\n"


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_run_dir(tmp_path, monkeypatch):
    def broken(cfg, run, **kwargs):
        raise MemoryError

    monkeypatch.setattr(dqn, "train", broken)
    code = run_main(["--agent", "dqn", "--game", "CartPole-v1", "--run-dir", "r"], tmp_path, monkeypatch)
    assert code == 2 and not (tmp_path / "r").exists()


def test_the_last_line_says_why_the_run_ended(tmp_path, monkeypatch, capsys):
    """A run ends on its --total-steps, or on its --hours (kept by a resume, so the line says how to go on)."""
    run_dir = str(tmp_path / "run")
    argv = ["--game", "CartPole-v1", "--num-envs", "2", "--num-steps", "64", "--minibatches", "2", "--quiet",
            "--run-dir", run_dir, "--total-steps", "256"]
    assert run_main(argv, tmp_path, monkeypatch) == 0
    assert "finished (--total-steps 256 reached): step 256" in capsys.readouterr().err
    assert run_main(["--resume", run_dir, "--total-steps", "100000", "--hours", "1e-9", "--quiet"],
                    tmp_path, monkeypatch) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"finished (--hours 1e-09 of training reached; to go on: --resume {run_dir} --hours 0")
