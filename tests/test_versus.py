"""Two-player Pong (envs/versus.py, envs/versus_recording.py, scripts/versus.py), headless.

The views are checked against envs.make's presets on single-player Pong (no extra needed); the
mirroring on a known single-player frame and on a two-player one; a scripted person plays a short
game against a checkpoint and the recording replays bit for bit; agent against agent repeats itself
for a seed; without the versus extra the command says in one line how to install it. Games are cut
at a few hundred steps (--max-steps) to stay fast.
"""
import json
import os
import sys

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import envs  # noqa: E402
from agents.policy_gradient import Config as PGConfig, build_policy, resolved as pg_resolved  # noqa: E402
from agents.run import config_dict, save_checkpoint  # noqa: E402
from envs import versus  # noqa: E402
from envs import versus_recording  # noqa: E402
from envs.recording_format import RecordingError, data_crc32  # noqa: E402
from nets.npzfile import read_npz, write_npz  # noqa: E402

needs_extra = pytest.mark.skipif(not versus.available(), reason='two-player Pong needs the versus extra '
                                 '(pettingzoo, multi-agent-ale-py): pip install -e ".[versus]"')
GREEN, ORANGE = versus.PADDLE_RGB["right"], versus.PADDLE_RGB["left"]


# one BLAS thread for this module: see one_blas_thread in conftest.py
pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def pg_checkpoint(tmp_path_factory):
    """Karpathy's Pong policy, untrained, with large first-layer weights so it moves both ways."""
    path = tmp_path_factory.mktemp("pg") / "pg.npz"
    model = build_policy(6400, 2, 200, "sigmoid", np.random.default_rng(0))
    model.layers[0].params["W"] *= 30
    save_checkpoint(path, {"model": model}, {
        "agent": "pg", "config": config_dict(pg_resolved(PGConfig(game="pong"))),
        "env": envs.env_spec("pong", "karpathy", True), "obs_shape": [6400], "n_actions": 2,
        "head": "sigmoid", "step": 0, "episode": 0})
    return str(path)


@pytest.fixture(scope="module")
def dqn_checkpoint(tmp_path_factory):
    from agents import dqn
    path = tmp_path_factory.mktemp("dqn") / "dqn.npz"
    model = dqn.build_q_network((4, 84, 84), 6, "nature", 512, False, np.random.default_rng(0))
    save_checkpoint(path, {"model": model}, {
        "agent": "dqn", "config": config_dict(dqn.resolved(dqn.Config(game="pong"))),
        "env": envs.env_spec("pong", "deepmind", False), "obs_shape": [4, 84, 84], "n_actions": 6,
        "obs_scale": 1 / 255, "step": 0, "episode": 0})
    return str(path)


def single_player_frame(up_frames=60):
    """A single-player Pong screen after the agent (green, right) held up for a while."""
    import gymnasium as gym
    env = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    env.reset(seed=0)
    for _ in range(up_frames):
        rgb, *_ = env.step(2)  # RIGHT: up
    gray = env.unwrapped.ale.getScreenGrayscale()
    env.close()
    return rgb, gray


def where(frame, colour):
    mask = versus._is_colour(frame[34:194], colour)  # the field, without the score
    ys, xs = np.nonzero(mask)
    return ys.min() + 34, ys.max() + 34, xs.min(), xs.max()


# ----------------------------------------------------------------------------- views and mirroring

@pytest.mark.parametrize("preset", ["karpathy", "deepmind"])
def test_right_view_is_the_single_player_preset(preset):
    """Each side's input is built by skip_frames + the view; on the right (unmirrored) it must equal what
    envs.make gives on single-player Pong, stack for stack, for the same actions and frames."""
    import gymnasium as gym
    ref = envs.make("pong", preset, sticky=False, noop_max=0)
    base = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    ale = base.unwrapped.ale
    view = versus.make_view(envs.env_spec("pong", preset, False), "right")

    class Screens:  # what VersusPong keeps after a step
        gray_pool = np.zeros((2, 210, 160), np.uint8)

    want, _ = ref.reset(seed=3)
    base.reset(seed=3)
    Screens.rgb, Screens.gray_pool[0], Screens.gray_pool[1] = ale.getScreenRGB(), ale.getScreenGrayscale(), 0
    assert np.array_equal(view.reset(Screens), want)
    rng = np.random.default_rng(0)
    for i in range(150):
        a = int(rng.integers(ref.action_space.n))
        want, want_reward, *_ = ref.step(a)

        def frame():
            _, reward, terminated, _, _ = base.step(view.to_ale(a))
            return (reward,), terminated

        reward, _ = versus.skip_frames(frame, ale.getScreenGrayscale, Screens.gray_pool, 4)
        Screens.rgb = ale.getScreenRGB()
        assert np.array_equal(view.step(Screens), want), f"step {i}"
        assert float(reward[0]) == want_reward
    ref.close()
    base.close()


def test_mirror_swaps_the_paddles_on_a_known_frame():
    rgb, gray = single_player_frame()
    green, orange = where(rgb, GREEN), where(rgb, ORANGE)
    assert green[2:] == (140, 143) and orange[2:] == (16, 19)  # right and left paddle columns
    assert green[0] == 34  # the agent's paddle went up to the top wall
    m = versus.mirror_rgb(rgb)
    # the left paddle is now green on the right, at the same height, and the other way round
    assert where(m, GREEN) == (orange[0], orange[1], 140, 143)
    assert where(m, ORANGE) == (green[0], green[1], 16, 19)
    # everything else is the flipped screen, but for the score band (rows 0-20), which is not flipped
    swapped = versus._is_colour(m, GREEN) | versus._is_colour(m, ORANGE)
    assert np.array_equal(m[21:][~swapped[21:]], rgb[21:, ::-1][~swapped[21:]])
    assert np.array_equal(m[:21][~swapped[:21]], rgb[:21][~swapped[:21]])
    assert versus.mirror_rgb(m).tobytes() == rgb.tobytes()  # mirroring twice changes nothing
    # grayscale: the paddle shades are ALE's, and mirror_gray is the grayscale of mirror_rgb
    assert set(gray[versus._is_colour(rgb, GREEN)]) == {versus.PADDLE_GRAY["right"]}
    assert set(gray[versus._is_colour(rgb, ORANGE)]) == {versus.PADDLE_GRAY["left"]}
    shade = {tuple(c): g for c, g in zip(rgb.reshape(-1, 3).tolist(), gray.ravel().tolist())}
    gray_of_mirror = np.array([shade[tuple(c)] for c in m.reshape(-1, 3).tolist()], np.uint8).reshape(210, 160)
    assert np.array_equal(versus.mirror_gray(gray), gray_of_mirror)
    # karpathy binarizes: the mirrored view holds the left paddle's rows in the right paddle's columns
    seen = versus.karpathy_preprocess(m).reshape(80, 80)
    rows = np.nonzero(seen[:, 70])[0]  # column 70 of 80 is screen column 140
    assert (rows.min(), rows.max()) == ((orange[0] - 35) // 2, (orange[1] - 35) // 2)


@needs_extra
def test_mirrored_score_band_reads_as_the_right_players_screen():
    """The score digits are not mirror images: the left player's score moves, unflipped and in green,
    into the right player's field, and the right player's score into the left field, in orange."""
    env = versus.VersusPong()
    env.reset(seed=0)
    scores = np.zeros(2)
    while scores.max() < 2:  # left holds up, right holds down: points come within a few hundred steps
        rewards, *_ = env.step(2, 3)
        scores += np.asarray(rewards) > 0
    left_field, right_field = versus.SCORE_FIELDS
    band = env.rgb[:21]
    m = versus.mirror_rgb(env.rgb)[:21]
    assert not np.array_equal(band[:, left_field], band[:, right_field])  # the scores differ
    for dst, src in ((right_field, left_field), (left_field, right_field)):
        want = band[:, src].copy()
        green, orange = versus._is_colour(want, GREEN), versus._is_colour(want, ORANGE)
        want[green], want[orange] = ORANGE, GREEN
        assert np.array_equal(m[:, dst], want)
    digit = m[:, right_field] if scores[0] == 2 else m[:, left_field]  # a 2, which a flip would change
    assert not np.array_equal(digit, digit[:, ::-1])
    gray = env.ale.getScreenGrayscale()[:, :, 0]
    assert np.array_equal(versus.mirror_gray(gray)[:21, right_field], versus._GRAY_SWAP[gray[:21, left_field]])
    env.close()


@needs_extra
def test_two_player_frames_and_the_left_view():
    """PettingZoo's screen has single-player Pong's colours; the left player's paddle, moved up, is what
    its view shows at the top right, in the right paddle's shade."""
    env = versus.VersusPong()
    env.reset(seed=0)
    left = versus.DeepMindView("left")
    karpathy_left = versus.KarpathyView("left")
    left.reset(env)
    karpathy_left.reset(env)
    for _ in range(10):
        env.step(2, 3)  # left up, right down
        obs, _ = left.step(env), karpathy_left.step(env)
    orange, green = where(env.rgb, ORANGE), where(env.rgb, GREEN)
    assert (orange[0], orange[2]) == (34, 16) and (green[1], green[2]) == (193, 140)  # left top, right bottom
    pooled = left._pooled(env)  # (210, 160): max of the last two frames, mirrored
    mine = np.nonzero(pooled[34:194, 141] == versus.PADDLE_GRAY["right"])[0] + 34  # right column, own shade
    theirs = np.nonzero(pooled[34:194, 17] == versus.PADDLE_GRAY["left"])[0] + 34  # left column, other shade
    assert mine.min() == 34 and mine.max() < 60 and theirs.max() == 193 and theirs.min() > 150
    import cv2
    assert np.array_equal(obs[-1], cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA))
    seen = karpathy_left.prev.reshape(80, 80)  # binarized and mirrored: its own paddle at the top right
    assert np.nonzero(seen[:, 70])[0].max() < 5 and np.nonzero(seen[:, 8])[0].min() > 60
    env.close()


# ----------------------------------------------------------------------------- a person and agents

@needs_extra
def test_a_game_the_person_quits_is_recorded_but_not_scored(pg_checkpoint, tmp_path, capsys):
    from scripts import versus as script
    assert script.main([pg_checkpoint, "--human", "--record", str(tmp_path), "--fps", "0", "--scale", "1"],
                       max_frames=40) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["games"], result["cut_short"], result["left_wins"], result["right_wins"]) == (0, 1, 0, 0)
    assert "0 games (and 1 cut short, not scored)" in out and "(cut short)" in out
    assert len(os.listdir(tmp_path)) == 1  # recorded all the same


@needs_extra
def test_scripted_person_against_an_agent_replays_bit_exactly(pg_checkpoint, tmp_path, capsys):
    from scripts import replay, versus as script
    shots = []
    keys = {3: ["+up"], 30: ["-up"], 40: ["+down", "+space"], 70: ["-down", "-space"]}

    def on_frame(win, session):
        if session.match.steps == 50:
            shots.append(session.panel())

    assert script.main([pg_checkpoint, "--human", "--record", str(tmp_path), "--fps", "0", "--max-steps", "90",
                        "--games", "2", "--scale", "1"], max_frames=1000, keys=keys, on_frame=on_frame) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["left"] == "human" and result["games"] == 2
    saved = sorted(os.listdir(tmp_path))
    assert len(saved) == 2
    rec = versus_recording.load(tmp_path / saved[0])
    assert rec.header["players"] == {"left": "human", "right": "pg.npz"} and rec.header["length"] == 90
    person = rec.actions[:, 0]  # keys at frame f act from step f on
    assert (person[:3] == 0).all() and (person[3:30] == 2).all() and (person[30:40] == 0).all()
    assert (person[40:70] == 5).all() and (person[70:] == 0).all()  # LEFTFIRE: down with Space
    assert set(np.unique(rec.actions[:, 1])) == {2, 3}  # the agent's up and down
    screens = list(versus_recording.replay(rec.path))
    assert len(screens) == 91  # every CRC checked on the way
    panel = shots[0]
    assert panel["bars"]["labels"] == ["UP", "DOWN"] and panel["bars"]["kind"] == "prob"
    assert [label for label, _ in panel["lines"]][:2] == ["score", "tally"]
    # scripts.replay plays the directory back, both games, every screen checked
    checked = []
    assert replay.main([str(tmp_path), "--fps", "0"], max_frames=400,
                       on_frame=lambda win, s: checked.append((s.index, s.tape.checked))) == 0
    assert (1, 91) in checked


@needs_extra
def test_agent_against_agent_is_deterministic_for_a_seed(pg_checkpoint, dqn_checkpoint, tmp_path, capsys):
    from scripts import versus as script

    def match(seed, folder, games=2):
        assert script.main([pg_checkpoint, dqn_checkpoint, "--games", str(games), "--seed", str(seed), "--no-window",
                            "--max-steps", "80", "--record", str(folder)]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        recs = [versus_recording.load(folder / name) for name in sorted(os.listdir(folder))]
        return lines, recs

    lines_a, recs_a = match(5, tmp_path / "a")
    lines_b, recs_b = match(5, tmp_path / "b")
    _, recs_c = match(6, tmp_path / "c", games=1)
    result = json.loads(lines_a[-1])
    assert set(result) >= {"left", "right", "games", "left_wins", "right_wins", "mean_point_diff"}
    assert result["games"] == 2 and result["left"] == pg_checkpoint
    assert "mean point difference" in lines_a[-2]  # the readable table before the JSON
    assert [l for l in lines_a if not l.startswith("game")] == [l for l in lines_b if not l.startswith("game")]
    for a, b in zip(recs_a, recs_b):
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.screen_crc32, b.screen_crc32)
    assert not np.array_equal(recs_a[0].actions, recs_c[0].actions)
    left, right = recs_a[0].actions[:, 0], recs_a[0].actions[:, 1]
    assert set(np.unique(left)) <= {2, 3} and len(np.unique(right)) > 1  # karpathy up/down; DQN's epsilon


@needs_extra
def test_edited_recording_is_caught(pg_checkpoint, tmp_path, capsys):
    from scripts import versus as script
    assert script.main([pg_checkpoint, pg_checkpoint, "--games", "1", "--no-window", "--max-steps", "40",
                        "--record", str(tmp_path)]) == 0
    path = tmp_path / os.listdir(tmp_path)[0]
    arrays, header = read_npz(path)
    arrays["actions"][20:, 0] = 3  # from step 21 on the left paddle only goes down
    forged = tmp_path / "forged.npz"
    write_npz(forged, arrays, header)
    with pytest.raises(RecordingError, match="data_crc32"):
        versus_recording.load(forged)
    header["data_crc32"] = data_crc32(arrays)
    write_npz(forged, arrays, header)
    with pytest.raises(RecordingError, match="diverged at step (2[1-9]|3[0-9]|40) "):
        list(versus_recording.replay(forged))


@needs_extra
def test_round_robin_prints_a_table_and_the_matches(pg_checkpoint, tmp_path, capsys):
    from scripts import versus as script
    assert script.main([pg_checkpoint, "--round-robin", "--games", "1", "--max-steps", "30"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    matches = json.loads(lines[-1])["matches"]
    assert [(m["left"], m["right"], m["games"]) for m in matches] == [(pg_checkpoint, pg_checkpoint, 1)]
    assert lines[-3].startswith("left \\ right") and lines[-2].startswith(pg_checkpoint)


def test_single_player_recordings_are_told_apart(tmp_path):
    path = tmp_path / "single.npz"
    envs.record("pong", lambda obs: 0, path, preset="karpathy", max_steps=5)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert not versus_recording.is_versus(path) and not versus_recording.is_versus(tmp_path / "junk.npz")
    with pytest.raises(RecordingError, match="not a two-player recording"):
        versus_recording.load(path)


# ----------------------------------------------------------------------------- errors

def one_line_exit_2(capsys, fn, *args, **kwargs):
    with pytest.raises(SystemExit) as e:
        fn(*args, **kwargs)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_without_the_extra_one_line_says_how_to_install(pg_checkpoint, monkeypatch, capsys):
    for name in list(sys.modules):
        if name.split(".")[0] in ("pettingzoo", "multi_agent_ale_py"):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "pettingzoo", None)  # import pettingzoo now raises ImportError
    from scripts import versus as script
    assert not versus.available()
    for argv in ([pg_checkpoint, pg_checkpoint, "--no-window"], [pg_checkpoint, "--human"]):
        message = one_line_exit_2(capsys, script.main, argv)
        assert 'pip install -e ".[versus]"' in message


def test_bad_command_lines_exit_2_in_one_line(pg_checkpoint, tmp_path, capsys):
    from scripts import versus as script
    assert "two checkpoints" in one_line_exit_2(capsys, script.main, [pg_checkpoint])
    assert "no such checkpoint" in one_line_exit_2(capsys, script.main, [pg_checkpoint, str(tmp_path / "x.npz")])
    assert "--games" in one_line_exit_2(capsys, script.main, [pg_checkpoint, pg_checkpoint, "--games", "0"])
    with pytest.raises(ValueError, match="Pong agents"):
        versus.make_view(envs.env_spec("breakout", "deepmind", False), "left")
