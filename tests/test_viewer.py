"""The pygame viewer and its programs (watch, replay, play, inspect), headless under SDL_VIDEODRIVER=dummy.

The programs run in this process for a few hundred frames with scripted keys; the tests read the
window's pixels (the game frame scaled, the panel, the bars, the network's-eye view) and replay the
recordings they wrote, bit for bit.
"""
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import agents  # noqa: E402
import envs  # noqa: E402
from agents.policy_gradient import Config as PGConfig, build_policy, resolved as pg_resolved  # noqa: E402
from agents.run import config_dict, load_checkpoint, save_checkpoint  # noqa: E402
from envs import recording  # noqa: E402
from nets.npzfile import read_npz, write_npz  # noqa: E402
from scripts import inspect as inspect_script, play, replay, viewer, watch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# one BLAS thread for this module: see one_blas_thread in conftest.py
pytestmark = pytest.mark.usefixtures("one_blas_thread")


def pixels(surface, rect=None):
    """The window (or a rectangle of it) as (H, W, 3) uint8."""
    import pygame
    a = pygame.surfarray.array3d(surface).swapaxes(0, 1)  # (H, W, 3)
    if rect is None:
        return a
    return a[rect.top:rect.bottom, rect.left:rect.right]


def scaled(frame, k):
    return np.kron(frame, np.ones((k, k, 1), np.uint8))  # (H*k, W*k, 3)


# ----------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def pg_checkpoint(tmp_path_factory):
    """Karpathy's Pong policy, untrained but with large first-layer weights so its bars move."""
    path = tmp_path_factory.mktemp("pg") / "checkpoint.npz"
    rng = np.random.default_rng(0)
    model = build_policy(6400, 2, 200, "sigmoid", rng)
    model.layers[0].params["W"] *= 30
    save_checkpoint(path, {"model": model}, {
        "agent": "pg", "config": config_dict(pg_resolved(PGConfig(game="pong"))),
        "env": envs.env_spec("pong", "karpathy", True), "obs_shape": [6400], "n_actions": 2,
        "head": "sigmoid", "step": 0, "episode": 0})
    with open(path.parent / "progress.csv", "w") as f:
        f.write("step,episode,return,length,running_mean,wall_seconds\n")
        for e in range(1, 30):
            f.write(f"{e * 1000},{e},{-21 + e * 0.5},{1000},{-21 + e * 0.4},{e}\n")
    return str(path)


@pytest.fixture(scope="module")
def dqn_checkpoint(tmp_path_factory):
    from agents import dqn
    path = tmp_path_factory.mktemp("dqn") / "checkpoint.npz"
    model = dqn.build_q_network((4, 84, 84), 6, "nature", 512, False, np.random.default_rng(0))
    save_checkpoint(path, {"model": model}, {
        "agent": "dqn", "config": config_dict(dqn.resolved(dqn.Config(game="pong"))),
        "env": envs.env_spec("pong", "deepmind", False), "obs_shape": [4, 84, 84], "n_actions": 6,
        "obs_scale": 1 / 255, "step": 0, "episode": 0})
    agents.load(path)  # a DQN checkpoint (Conv2d's input_grad flag included) loads back
    return str(path)


class Capture:
    """on_frame hook: keeps what each drawn frame showed."""

    def __init__(self, keep_pixels=()):
        self.keep_pixels = set(keep_pixels)
        self.steps, self.crcs, self.bars, self.shots, self.views = [], [], [], {}, []

    def __call__(self, win, session):
        frame = session.frame()
        self.steps.append(getattr(session, "steps", getattr(session, "pos", None)))
        self.crcs.append(zlib.crc32(np.ascontiguousarray(frame)))
        self.bars.append(pixels(win.surface, win.rects["bars"]).copy())
        n = len(self.steps) - 1
        if n in self.keep_pixels:
            self.shots[n] = (pixels(win.surface).copy(), frame.copy(), dict(win.rects), session.panel())


# ----------------------------------------------------------------------------- watch

def test_watch_pg_draws_frame_panel_bars_view_and_pauses(pg_checkpoint, tmp_path, capsys):
    cap = Capture(keep_pixels=(10, 120))
    keys = {40: ["space"], 45: ["right"], 50: ["right"], 55: ["space"], 60: ["+"], 61: ["-"]}
    assert watch.main([pg_checkpoint, "--fps", "0", "--episodes", "1", "--record", str(tmp_path / "rec")],
                      max_frames=150, keys=keys, on_frame=cap) == 0

    image, frame, rects, panel = cap.shots[120]
    assert image.shape[:2] == (630, 480 + viewer.PANEL_WIDTH)
    assert np.array_equal(image[:630, :480], scaled(frame, 3))  # the game, pixel for pixel x3
    side = pixels_of(image, rects["panel"])
    assert np.array_equal(side[-1, -1], viewer.PANEL_BACKGROUND)
    assert (np.abs(side.astype(int) - viewer.PANEL_BACKGROUND).sum(axis=2) > 100).sum() > 500  # text drawn
    view = pixels_of(image, rects["view"])
    k = rects["view"].width // 80
    expected = scaled(viewer.view_rgb(panel["view"]["tiles"][0], "diff"), k)
    assert np.array_equal(view, expected)  # the network's eye is the 80x80 frame difference
    assert panel["bars"]["kind"] == "prob" and np.isclose(sum(panel["bars"]["values"]), 1.0)
    changed = sum(not np.array_equal(a, b) for a, b in zip(cap.bars, cap.bars[1:]))
    assert changed > 10, "the probability bars should move as the game goes"

    steps = cap.steps  # paused at 40: the step only moves on Right (45, 50), again from 55
    assert steps[41:45] == [steps[40]] * 4
    assert steps[45] == steps[40] + 1 and steps[50] == steps[40] + 2 and steps[54] == steps[50]
    assert steps[56] > steps[55] and steps[-1] == 150 - 13  # 13 frames paused, each frame one step

    path = tmp_path / "rec" / "game-000000.npz"  # quitting mid-game keeps the recorded game
    assert f"saved {path}" in capsys.readouterr().out
    replayed = [zlib.crc32(screen) for screen, _, _ in recording.replay(path)]
    shown = dict(zip(cap.steps, cap.crcs))
    assert len(replayed) == steps[-1] + 1 and all(replayed[s] == crc for s, crc in shown.items())


def pixels_of(image, rect):
    return image[rect.top:rect.bottom, rect.left:rect.right]


def test_watch_r_starts_and_stops_recording(pg_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # R without --record saves into ./recordings
    import pygame
    cap = Capture()

    def close_window_at_70(win, session):
        cap(win, session)
        if len(cap.steps) == 70:
            pygame.event.post(pygame.event.Event(pygame.QUIT))

    watch.main([pg_checkpoint, "--fps", "0", "--seed", "7"], max_frames=500, keys={20: ["r"], 60: ["r"]},
               on_frame=close_window_at_70)
    assert len(cap.steps) == 70  # closing the window quits at once
    path = tmp_path / "recordings" / "game-000007.npz"
    rec = recording.load(path)
    assert rec.header["seed"] == 7 and rec.header["player"] == "checkpoint.npz"
    assert len(rec.actions) == cap.steps[59] == 60  # the game from its start up to the second R
    screens = [zlib.crc32(s) for s, _, _ in recording.replay(path)]
    assert screens[1:] == cap.crcs[:60]  # the first frame drawn is after one step


def test_watch_dqn_shows_q_values_and_the_frame_stack(dqn_checkpoint, tmp_path):
    cap = Capture(keep_pixels=(30,))
    watch.main([dqn_checkpoint, "--fps", "0", "--scale", "2", "--record", str(tmp_path)], max_frames=500,
               keys={60: ["escape"]}, on_frame=cap)
    assert len(cap.steps) == 60
    image, frame, rects, panel = cap.shots[30]
    assert np.array_equal(image[:420, :320], scaled(frame, 2))
    assert panel["bars"]["kind"] == "q" and len(panel["bars"]["labels"]) == 6
    assert panel["bars"]["labels"][:2] == ["NOOP", "FIRE"]
    tiles = panel["view"]["tiles"]
    assert len(tiles) == 4 and tiles[0].shape == (84, 84)
    k = (rects["view"].width + 4) // 2 // 84
    top_left = pixels_of(image, rects["view"])[:84 * k, :84 * k, 0]
    assert np.array_equal(top_left, np.kron(tiles[0], np.ones((k, k), np.uint8)))
    assert sum(not np.array_equal(a, b) for a, b in zip(cap.bars, cap.bars[1:])) > 5
    replayed = [zlib.crc32(s) for s, _, _ in recording.replay(tmp_path / "game-000000.npz")]
    assert replayed[-1] == cap.crcs[-1]  # deepmind preset: 4 recorded frames per agent step


# ----------------------------------------------------------------------------- replay

@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("games")
    for seed, steps, frames in ((0, 400, False), (1, 40, True)):
        rng = np.random.default_rng(seed)
        recording.record("pong", lambda obs: int(rng.integers(2)), folder / f"game-{seed}.npz",
                         preset="karpathy", seed=seed, frames=frames, max_steps=steps)
    return folder


def test_replay_shows_each_game_seeks_and_switches(recordings):
    screens = {i: [s for s, _, _ in recording.replay(recordings / f"game-{i}.npz")] for i in (0, 1)}
    shown, looked_at = [], {0, 10, 12, 13, 14, 16, 30, 40, 50, 55, 60, 75, 119}

    def on_frame(win, session):
        image = pixels(win.surface, win.rects["game"]) if len(shown) in looked_at else None
        shown.append((session.index, session.pos, image))

    keys = {10: ["space"], 12: ["right"], 13: ["right"], 14: ["left"], 16: ["space"],
            30: ["right"], 40: ["left"], 50: ["n"], 55: ["p"], 60: ["n"]}
    replay.main([str(recordings), "--fps", "0"], max_frames=120, keys=keys, on_frame=on_frame)
    for index, pos, image in shown:
        assert image is None or np.array_equal(image, scaled(screens[index][pos], 3)), (index, pos)
    at = [(i, p) for i, p, _ in shown]
    assert at[11] == at[10] and at[12][1] == at[10][1] + 1 and at[14][1] == at[10][1] + 1  # paused steps
    assert at[30][1] == at[29][1] + 150 + 1  # 10 s forward (15 steps/s), then the frame's own step
    assert at[40][1] == at[39][1] - 150 + 1
    assert at[50] == (1, 1) and at[55] == (0, 1) and at[60] == (1, 1)  # N, P, N: first frame, then a step
    assert at[-1] == (1, 40)  # holds on the last screen of the last game


def test_replay_in_a_window_nobody_sees_ends_after_the_last_game(recordings):
    """A real window holds the last screen until a key; with SDL's dummy driver there is nobody to
    press one, so the command ends (in a child process, so a regression fails instead of hanging)."""
    r = subprocess.run([sys.executable, "-m", "scripts.replay", str(recordings), "--fps", "0"], cwd=ROOT,
                       env={**os.environ, "SDL_VIDEODRIVER": "dummy"}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_replay_export_and_info(recordings, tmp_path, capsys):
    out = tmp_path / "game.gif"
    assert replay.main([str(recordings / "game-1.npz"), "--export", str(out)]) == 0
    assert out.stat().st_size > 1000 and "41 frames" in capsys.readouterr().out
    assert replay.main([str(recordings), "--info"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["length"] for r in rows] == [400, 40] and rows[1]["frames"] is True


# ----------------------------------------------------------------------------- play

def test_play_maps_keys_and_records_every_game(tmp_path, capsys):
    cap = Capture(keep_pixels=(20,))
    keys = {5: ["+up"], 30: ["-up", "+down", "+space"], 50: ["-down", "-space"], 60: ["p"], 70: ["p"], 90: ["q"]}
    play.main(["--game", "pong", "--fps", "0", "--seed", "3", "--out", str(tmp_path)], max_frames=500,
              keys=keys, on_frame=cap)
    assert len(cap.steps) == 90  # Q quits before frame 90 is drawn
    image, frame, rects, panel = cap.shots[20]
    assert np.array_equal(image[:630, :480], scaled(frame, 3))
    assert panel["bars"]["labels"][panel["bars"]["chosen"]] == "UP"  # Up moves Pong's paddle up: ALE's RIGHT
    assert cap.steps[61:70] == [cap.steps[60]] * 9  # P paused
    (path,) = tmp_path.glob("pong-*-001.npz")
    assert "cut short" in capsys.readouterr().out
    rec = recording.load(path)
    assert rec.header["player"] == "human" and rec.header["seed"] == 3
    meanings = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    taken = [meanings[a] for a in rec.actions[::4]]  # four base frames per step
    assert taken[:4] == ["NOOP"] * 4 and "RIGHT" in taken and "LEFTFIRE" in taken
    replayed = [zlib.crc32(s) for s, _, _ in recording.replay(path)]
    assert len(replayed) == 4 * cap.steps[-1] + 1
    assert all(replayed[4 * step] == crc for step, crc in zip(cap.steps, cap.crcs))


@pytest.mark.parametrize("held, name", [
    (set(), "NOOP"), ({"space"}, "FIRE"), ({"up"}, "UP"), ({"up", "right"}, "UPRIGHT"),
    ({"up", "right", "space"}, "UPRIGHTFIRE"), ({"up", "down"}, "NOOP"), ({"down", "left", "space"}, "DOWNLEFTFIRE"),
])
def test_keys_to_actions_full_set(held, name):
    meanings = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
                "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE",
                "DOWNLEFTFIRE"]
    assert meanings[play.action_for(held, meanings)] == name


def test_keys_to_actions_pong_and_missing_fire():
    pong = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    assert pong[play.action_for({"up"}, pong, up_is_right=True)] == "RIGHT"
    assert pong[play.action_for({"down", "space"}, pong, up_is_right=True)] == "LEFTFIRE"
    assert pong[play.action_for({"up", "right"}, pong)] == "RIGHT"  # no UPRIGHT: keep what exists
    assert ["NOOP", "UP"][play.action_for({"up", "space"}, ["NOOP", "UP"])] == "UP"


def test_speed_keys_double_and_halve():
    assert viewer.change_speed(15, True) == 30 and viewer.change_speed(15, False) == 7.5
    assert viewer.change_speed(1, False) == 1 and viewer.change_speed(1920, True) == 1920
    assert viewer.change_speed(0, True) == 0 and viewer.change_speed(0, False) == 1920


# ----------------------------------------------------------------------------- inspect

def test_inspect_draws_weights_beside_the_learning_curve(pg_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.png"
    assert inspect_script.main([pg_checkpoint, "--out", str(out)]) == 0
    assert "200 tiles" in capsys.readouterr().out
    import matplotlib.image
    image = matplotlib.image.imread(out)
    assert image.shape[1] > 1.5 * image.shape[0]  # weights and curve side by side
    models, header, _ = agents.run.load_checkpoint(pg_checkpoint)
    tiles, what = inspect_script.first_layer_tiles(models, header)
    assert tiles.shape == (200, 80, 80) and "200 hidden units" in what
    assert np.array_equal(tiles[7], models["model"].layers[0].params["W"][:, 7].reshape(80, 80))


def test_inspect_dqn_conv1_filters(dqn_checkpoint):
    models, header, _ = agents.run.load_checkpoint(dqn_checkpoint)
    tiles, what = inspect_script.first_layer_tiles(models, header)
    W = models["model"].layers[0].params["W"]  # (32, 4, 8, 8)
    assert tiles.shape == (32, 8, 4 * 9 - 1) and "32 filters" in what
    assert np.array_equal(tiles[3][:, 9:17], W[3, 1]) and np.isnan(tiles[3][:, 8]).all()


def test_inspect_ppo_mlp_draws_the_actor_towers_first_layer(tmp_path, capsys):
    """PPO on a classic task runs actor and critic towers side by side (a Parallel first layer):
    inspect draws the actor's first Linear, one row per unit."""
    from agents import ppo
    cfg = ppo.resolved(ppo.Config(game="CartPole-v1", num_envs=2, num_steps=16, minibatches=2, total_steps=32,
                                  eval_every=0))
    run = agents.run.Run(str(tmp_path / "run"), config_dict(cfg), envs.env_spec(cfg.game, cfg.preset, cfg.sticky),
                         message=lambda text: None)
    run.write_config()
    ppo.train(cfg, run)
    out = tmp_path / "model.png"
    assert inspect_script.main([run.checkpoint_path, "--out", str(out)]) == 0
    assert f"{cfg.hidden} tiles" in capsys.readouterr().out and out.exists()
    models, header, _ = agents.run.load_checkpoint(run.checkpoint_path)
    tiles, what = inspect_script.first_layer_tiles(models, header)
    actor_first = models["model"].layers[0].layers[0].layers[0]
    assert tiles.shape == (cfg.hidden, 1, 4) and np.array_equal(tiles[:, 0, :], actor_first.params["W"].T)


# ----------------------------------------------------------------------------- errors

def one_line_exit_2(capsys, fn, *args, **kwargs):
    with pytest.raises(SystemExit) as e:
        fn(*args, **kwargs)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    return err[0]


def test_no_display_says_what_to_do(pg_checkpoint, recordings, tmp_path, monkeypatch, capsys):
    for var in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    message = one_line_exit_2(capsys, watch.main, [pg_checkpoint, "--record", str(tmp_path / "w")])
    assert "SDL_VIDEODRIVER=dummy" in message and "--record" in message
    message = one_line_exit_2(capsys, replay.main, [str(recordings)])
    assert "SDL_VIDEODRIVER=dummy" in message and "--export" in message
    message = one_line_exit_2(capsys, play.main, ["--out", str(tmp_path / "p")])
    assert "SDL_VIDEODRIVER=dummy" in message
    assert not os.listdir(tmp_path)  # nothing played, nothing half-written


def test_bad_files_one_line_exit_2(pg_checkpoint, recordings, tmp_path, capsys):
    assert "no such file" in one_line_exit_2(capsys, watch.main, [str(tmp_path / "missing.npz")])
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(open(pg_checkpoint, "rb").read()[:5000])
    assert "corrupt.npz" in one_line_exit_2(capsys, watch.main, [str(corrupt)])
    assert "corrupt.npz" in one_line_exit_2(capsys, inspect_script.main, [str(corrupt), "--out", str(tmp_path / "m.png")])
    arrays, header = read_npz(recordings / "game-0.npz")
    write_npz(tmp_path / "v2.npz", arrays, {**header, "version": 2})
    assert "version 2 is not supported" in one_line_exit_2(capsys, replay.main, [str(tmp_path / "v2.npz")])
    assert "no such file" in one_line_exit_2(capsys, replay.main, [str(tmp_path / "nothing.npz")])
    assert ".mp4 or a .gif" in one_line_exit_2(capsys, replay.main, [str(recordings), "--export", "x.avi"])
    assert "did you mean" in one_line_exit_2(capsys, play.main, ["--game", "pongg"])


def test_shipped_checkpoint_choice(tmp_path, pg_checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(watch, "ROOT", tmp_path)
    message = one_line_exit_2(capsys, watch.main, [])
    assert "no shipped checkpoint yet" in message and "scripts.train --run-dir" in message
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("pong-pg", "pong-dqn"):
        (folder / f"{name}.npz").write_bytes(open(pg_checkpoint, "rb").read())
    assert watch.shipped_checkpoint().endswith("pong-pg.npz")  # no model cards: pg first
    (folder / "pong-pg.md").write_text("Evaluation: mean return: 3.5 over 30 games\n")
    (folder / "pong-dqn.md").write_text("| mean return | 19.2 |\n")
    assert watch.shipped_checkpoint().endswith("pong-dqn.npz")
    # scripts.ship's cards: each agent is judged on the protocol it trained on (and is watched on),
    # not on the card's first row: the no-sticky agent scores less with sticky actions, more without
    models, header, _ = load_checkpoint(pg_checkpoint)
    save_checkpoint(folder / "pong-dqn.npz", models, {**header, "env": envs.env_spec("pong", "karpathy", False)})
    row = '{{"protocol": "{}", "actions": "sampled", "mean_return": {}}}'
    (folder / "pong-pg.md").write_text("\n".join([row.format("v5-sticky", 0.67), row.format("v4-nosticky", 13.67)]))
    (folder / "pong-dqn.md").write_text("\n".join([row.format("v5-sticky", -2.0), row.format("v4-nosticky", 8.0)]))
    assert watch.trained_protocol(folder / "pong-dqn.npz") == "v4-nosticky"
    assert watch.model_card_mean(folder / "pong-dqn.md", "v4-nosticky") == 8.0
    assert watch.shipped_checkpoint().endswith("pong-dqn.npz")  # 8.0 without sticky beats 0.67 with
    (folder / "pong-dqn.md").write_text("\n".join([row.format("v5-sticky", 5.0), row.format("v4-nosticky", 0.5)]))
    assert watch.shipped_checkpoint().endswith("pong-pg.npz")  # 0.5 loses, though its sticky row is higher
    (folder / "pong-ppo.npz").write_bytes(open(pg_checkpoint, "rb").read())
    (folder / "pong-ppo.md").write_text(row.format("v5-sticky", 18.5))
    assert watch.shipped_checkpoint().endswith("pong-ppo.npz")  # a third shipped agent, better than both
    (folder / "pong-ppo.md").unlink()
    assert watch.shipped_checkpoint().endswith("pong-pg.npz")  # no card: it never wins on a number
    (folder / "pong-dqn.npz").write_bytes(b"not a checkpoint")
    assert watch.trained_protocol(folder / "pong-dqn.npz") is None


def test_command_line_exits_2_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    out = subprocess.run([sys.executable, "-m", "scripts.watch", str(tmp_path / "none.npz")], cwd=ROOT,
                         env={**env, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no such file" in out.stderr, out.stderr
    assert "pygame" not in out.stdout


# ----------------------------------------------------------------------------- small truths

def test_q_bars_stand_on_an_honest_scale_from_zero():
    """Q-values 0.559 and 0.572 are nearly alike and drawn so (min-max scaling drew them empty and
    full); a negative one points left of the zero line; probabilities fill in proportion."""
    starts, lengths, zero = viewer.bar_spans([0.559, 0.572], "q", 200)
    assert zero == 0 and list(starts) == [0, 0] and list(lengths) == [195, 200]
    starts, lengths, zero = viewer.bar_spans([-1.0, 0.5, 1.0], "q", 200)
    assert zero == 100 and list(starts) == [0, 100, 100] and list(lengths) == [100, 50, 100]
    starts, lengths, _ = viewer.bar_spans([-0.2, -0.1], "q", 100)
    assert list(starts + lengths) == [100, 100] and list(lengths) == [100, 50]  # all below zero: from the right
    assert list(viewer.bar_spans([0.25, 0.75], "prob", 100)[1]) == [25, 75]
    assert list(viewer.bar_spans([0.0, 0.0], "q", 100)[1]) == [0, 0]


def test_replay_names_pongs_actions_as_watch_and_play_do(pg_checkpoint, dqn_checkpoint, tmp_path):
    """Pong's paddle moves up on RIGHT: every program calls that action UP."""
    rng = np.random.default_rng(0)
    header = recording.record("pong", lambda obs: int(rng.integers(6)), tmp_path / "dm.npz", preset="deepmind",
                              max_steps=5)
    names = replay.action_meanings(header)
    assert names == ["NOOP", "FIRE", "UP", "DOWN", "UPFIRE", "DOWNFIRE"]
    dqn_agent = agents.load(dqn_checkpoint)
    session = watch.WatchSession(dqn_agent, 1, 0, False, False)
    assert session.labels == names
    session.close()
    pg_agent = agents.load(pg_checkpoint)
    session = watch.WatchSession(pg_agent, 1, 0, True, True)
    assert session.labels == ["UP", "DOWN"] and set(session.labels) <= set(names)
    session.close()
    assert envs.atari.readable_action_names("ALE/Breakout-v5", ["NOOP", "FIRE", "RIGHT", "LEFT"])[2] == "RIGHT"


def test_replay_exports_a_directory(recordings, tmp_path, capsys):
    """The no-display hint says `--export game.mp4` for a directory too: each recording gets its own file."""
    assert replay.main([str(recordings), "--export", str(tmp_path / "game.mp4")]) == 0
    assert sorted(os.listdir(tmp_path)) == ["game-game-0.mp4", "game-game-1.mp4"]
    assert replay.main([str(recordings), "--export", str(tmp_path / "videos") + "/"]) == 0
    assert sorted(os.listdir(tmp_path / "videos")) == ["game-0.mp4", "game-1.mp4"]
    assert capsys.readouterr().out.count("wrote") == 4


def test_inspect_a_shipped_agent_shows_its_curve_and_all_its_steps(tmp_path, capsys):
    shipped = os.path.join(ROOT, "checkpoints", "pong-dqn.npz")
    header = agents.run.checkpoint_header(shipped)
    assert inspect_script.steps_title(header) == "2,188,417 steps (1,906,421 before its last run, 281,996 in it)"
    assert inspect_script.curve_source(shipped) == ("shipped", os.path.join(ROOT, "checkpoints", "pong-dqn.png"))
    out = tmp_path / "model.png"
    assert inspect_script.main([shipped, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "32 tiles" in captured.out and captured.err == ""
    import matplotlib.image
    image = matplotlib.image.imread(out)
    assert image.shape[1] > 1.5 * image.shape[0]  # weights and the shipped curve side by side
    alone = tmp_path / "alone.npz"
    alone.write_bytes(open(shipped, "rb").read())
    assert inspect_script.main([str(alone), "--out", str(tmp_path / "alone.png")]) == 0
    assert "no learning curve: " in capsys.readouterr().err
