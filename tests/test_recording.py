"""envs/recording.py: record, replay bit-exact with sticky actions, tampering, size, export."""
import json
import os

import numpy as np
import pytest

import envs
from envs import recording
from envs.recording import Recorder, RecordingError, load, record, replay
from envs.recording_format import data_crc32
from nets.npzfile import read_npz, write_npz


def random_policy(n_actions, seed):
    rng = np.random.default_rng(seed)
    return lambda obs: int(rng.integers(n_actions))


@pytest.fixture(scope="module")
def pong(tmp_path_factory):
    """300 agent steps of Pong, karpathy preset, sticky actions on, frames stored."""
    path = tmp_path_factory.mktemp("rec") / "pong.npz"
    header = record("pong", random_policy(2, 0), path, preset="karpathy", seed=7, player="test-player",
                    frames=True, max_steps=300)
    return path, header


@pytest.fixture(scope="module")
def breakout(tmp_path_factory):
    """Breakout through the deepmind preset: frameskip=1 base env, no-op starts, FIRE on reset."""
    path = tmp_path_factory.mktemp("rec") / "breakout.npz"
    rec = Recorder(player="human")
    env = envs.make("breakout", "deepmind", training=True, recorder=rec)
    env.reset(seed=5)
    agent_steps, act = 0, random_policy(4, 1)
    while agent_steps < 100:
        _, _, terminated, truncated, _ = env.step(act(None))
        agent_steps += 1
        if (terminated or truncated) and env.unwrapped.ale.game_over():
            break
    header = rec.save(path)
    env.close()
    return path, header, agent_steps


def tampered(src, dst, edit):
    """Copy a recording with edit(arrays, header) applied, written by the shared npz writer."""
    arrays, header = read_npz(src)
    edit(arrays, header)
    write_npz(dst, arrays, header)
    return dst


# ----------------------------------------------------------------------------- contents

def test_header_holds_everything_replay_needs(pong):
    path, header = pong
    rec = load(path)
    h = rec.header
    assert h["format"] == recording.FORMAT and h["version"] == recording.VERSION
    assert h["env_id"] == "ALE/Pong-v5" and h["preset"] == "karpathy" and h["protocol"] == "v5-sticky"
    assert h["env_kwargs"]["repeat_action_probability"] == 0.25 and h["env_kwargs"]["frameskip"] == 4
    assert h["sticky"] is True and h["seed"] == 7 and h["player"] == "test-player"
    assert set(h["versions"]) >= {"ale_py", "gymnasium"} and h["spec"]["preset"] == "karpathy"
    assert h["length"] == 300 and len(rec.actions) == 300 and len(rec.screen_crc32) == 301
    assert h["return"] == float(rec.rewards.sum())
    assert set(np.unique(rec.actions)) <= {2, 3}  # raw ALE actions: karpathy's up/down are RIGHT/LEFT
    assert rec.summary()["player"] == "test-player"


def test_deepmind_preset_records_every_base_frame(breakout):
    path, header, agent_steps = breakout
    h = load(path).header
    assert h["env_kwargs"]["frameskip"] == 1 and h["preset"] == "deepmind"
    # 4 frames per agent step, plus the no-op starts and the FIRE presses (or fewer if the game ended)
    assert h["length"] >= 4 * agent_steps - 3


# ----------------------------------------------------------------------------- bit-exact replay

def test_pong_replays_bit_exact_from_emulator_and_from_stored_frames(pong):
    path, _ = pong
    rec = load(path)
    emulated = list(replay(path))
    stored = list(replay(path, frames=True))
    assert len(emulated) == len(stored) == 301
    assert emulated[0][1] is None and emulated[0][2] == 0.0
    assert [a for _, a, _ in emulated[1:]] == rec.actions.tolist()
    assert [r for _, _, r in emulated[1:]] == rec.rewards.tolist()
    for (f1, a1, r1), (f2, a2, r2) in zip(emulated, stored):
        assert f1.shape == (210, 160, 3) and f1.dtype == np.uint8
        assert np.array_equal(f1, f2) and a1 == a2 and r1 == r2


def test_breakout_replays_bit_exact(breakout):
    path, header, _ = breakout
    frames = list(replay(path))
    assert len(frames) == header["length"] + 1
    assert sum(r for _, _, r in frames) == header["return"]


def test_stored_frames_replay_without_the_emulator(pong, monkeypatch):
    path, _ = pong
    monkeypatch.setattr(recording.gym, "make", lambda *a, **k: pytest.fail("replay made an env"))
    assert sum(1 for _ in replay(path, frames=True)) == 301


def test_sticky_actions_come_from_the_seed(pong, tmp_path):
    # Pong's first screen is the same for every seed; only the sticky repeats differ, so a replay
    # under another seed must diverge later on: proof that the seed reproduces the sticky RNG.
    path = tampered(pong[0], tmp_path / "seed.npz", lambda a, h: h.update(seed=h["seed"] + 1))
    with pytest.raises(RecordingError, match=r"diverged at step [1-9]\d* of 300"):
        list(replay(path))


def test_every_game_after_the_first_replays_alone(tmp_path):
    rec = Recorder()
    env = envs.make("pong", "karpathy", recorder=rec)
    env.reset(seed=3)
    for _ in range(20):
        env.step(0)
    env.reset()  # no seed: the recorder draws one from the first, so this game replays too
    act = random_policy(2, 2)
    for _ in range(60):
        env.step(act(None))
    header = rec.save(tmp_path / "second.npz")
    env.close()
    assert header["seed"] != 3 and header["length"] == 60
    assert sum(1 for _ in replay(tmp_path / "second.npz")) == 61


def test_a_step_cut_by_ctrl_c_is_left_out_and_the_rest_replays(tmp_path):
    """Ctrl-C can land between the appends of one step (action logged, screen not yet)."""
    rec = Recorder()
    env = envs.make("pong", "karpathy", recorder=rec)
    env.reset(seed=4)
    for _ in range(30):
        env.step(1)
    rec.actions.append(1)  # the interrupted step: its action got in, its reward and screen did not
    header = rec.save(tmp_path / "cut.npz")
    env.close()
    assert header["length"] == 30 and header["end"] is None
    assert sum(1 for _ in replay(tmp_path / "cut.npz")) == 31


def test_recording_is_small(tmp_path):
    # 2,000 emulator steps without frames (Pong through the deepmind preset, frameskip=1)
    rec = Recorder()
    env = envs.make("pong", "deepmind", recorder=rec, noop_max=0)
    env.reset(seed=0)
    act = random_policy(6, 3)
    while rec.length < 2000:
        env.step(act(None))
    rec.save(tmp_path / "long.npz")
    env.close()
    assert rec.length >= 2000
    assert os.path.getsize(tmp_path / "long.npz") < 50_000


# ----------------------------------------------------------------------------- damaged and tampered files

def test_changed_action_is_caught_by_the_data_checksum(pong, tmp_path):
    def edit(arrays, header):
        arrays["actions"][150] = 5 - arrays["actions"][150]  # up <-> down
    path = tampered(pong[0], tmp_path / "edited.npz", edit)
    with pytest.raises(RecordingError, match="data_crc32: the file was edited or damaged"):
        load(path)


def test_changed_action_with_a_fixed_checksum_diverges_at_that_step(pong, tmp_path):
    def edit(arrays, header):
        arrays["actions"][150] = 5 - arrays["actions"][150]
        header["data_crc32"] = data_crc32(arrays)
    path = tampered(pong[0], tmp_path / "forged.npz", edit)
    with pytest.raises(RecordingError) as e:
        list(replay(path))
    msg = str(e.value)
    assert "\n" not in msg and "replay diverged at step 151 of 300" in msg and "edited" in msg


def test_truncated_file(pong, tmp_path):
    blob = open(pong[0], "rb").read()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RecordingError, match="not a valid .npz archive"):
        load(tmp_path / "cut.npz")


def test_wrong_format_version(pong, tmp_path):
    path = tampered(pong[0], tmp_path / "v99.npz", lambda a, h: h.update(version=99))
    with pytest.raises(RecordingError, match="format version 99 is not supported"):
        load(path)
    path = tampered(pong[0], tmp_path / "other.npz", lambda a, h: h.update(format="something-else"))
    with pytest.raises(RecordingError, match="not a grok-arcade recording"):
        load(path)


def test_another_game(pong, tmp_path):
    # relabelled as Breakout: the very first screen gives it away
    def relabel(arrays, header):
        header["env_id"] = "ALE/Breakout-v5"
        header["env_kwargs"]["game"] = "breakout"
    path = tampered(pong[0], tmp_path / "breakout.npz", relabel)
    with pytest.raises(RecordingError, match=r"diverged at step 0 of 300: CRC32 of the screen after reset"):
        list(replay(path))
    # an id and kwargs that disagree are refused before anything runs
    path = tampered(pong[0], tmp_path / "mixed.npz", lambda a, h: h.update(env_id="ALE/Breakout-v5"))
    with pytest.raises(RecordingError, match="env_kwargs say game 'pong' but env_id is ALE/Breakout-v5"):
        replay(path)


def test_arrays_that_disagree_with_the_header(pong, tmp_path):
    def shorten(arrays, header):
        arrays["actions"] = arrays["actions"][:-1]
    with pytest.raises(RecordingError, match="array 'actions' is uint8\\(299,\\), expected"):
        load(tampered(pong[0], tmp_path / "short.npz", shorten))
    with pytest.raises(ValueError, match="object dtype"):  # never written ...
        tampered(pong[0], tmp_path / "obj.npz", lambda a, h: a.update(actions=np.array([None])))
    arrays, header = read_npz(pong[0])
    arrays["actions"] = np.array([None] * 300, dtype=object)
    np.savez(tmp_path / "pickled.npz", __header__=np.frombuffer(json.dumps(header).encode(), np.uint8),
             **arrays)  # ... and refused before a pickle is read
    with pytest.raises(RecordingError, match="array 'actions' has dtype object, which is not allowed"):
        load(tmp_path / "pickled.npz")


def test_missing_file_and_not_an_npz(tmp_path):
    with pytest.raises(RecordingError, match="no such file"):
        load(tmp_path / "nothing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(RecordingError, match="not a valid .npz archive"):
        replay(tmp_path / "text.npz")


def test_replay_frames_needs_stored_frames(breakout):
    with pytest.raises(RecordingError, match="recorded without frames"):
        replay(breakout[0], frames=True)


def test_classic_control_cannot_be_recorded():
    with pytest.raises(ValueError, match="Atari"):
        envs.make("CartPole-v1", recorder=Recorder())


# ----------------------------------------------------------------------------- export

def test_export_gif_and_mp4(pong, tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    count = recording.export(pong[0], tmp_path / "game.gif", every=10)
    assert count == 31
    assert imageio.imread(tmp_path / "game.gif", index=None).shape[0] == 31
    pytest.importorskip("imageio_ffmpeg")
    assert recording.export(pong[0], tmp_path / "game.mp4", fps=30, scale=2) == 301
    assert os.path.getsize(tmp_path / "game.mp4") > 1000
    with pytest.raises(ValueError, match="mp4 or .gif"):
        recording.export(pong[0], tmp_path / "game.avi")


def gif_delays(path):
    from PIL import Image
    image, delays = Image.open(path), []
    try:
        while True:
            delays.append(image.info["duration"])
            image.seek(image.tell() + 1)
    except EOFError:
        return delays


def test_gifs_last_the_games_real_time(pong, breakout, tmp_path):
    """GIF delays are whole hundredths and browsers show a delay under 2 as 10: a deepmind-preset
    recording holds every emulator frame (60 a second), so its GIF keeps every 2nd one with delays of
    3 and 4 hundredths; the karpathy preset's 15 steps a second get 6 and 7. Either lasts real time."""
    for (path, header), fps in ((breakout[:2], 60.0), (pong, 15.0)):
        out = tmp_path / (os.path.basename(path)[:-4] + ".gif")
        written = recording.export(path, out)
        delays = gif_delays(out)
        real = (header["length"] + 1) / fps * 1000.0  # ms: every screen, the one after reset included
        assert abs(sum(delays) - real) <= 10, (sum(delays), real)
        assert min(delays) >= 20 and all(d % 10 == 0 for d in delays)
        assert written == (-(-(header["length"] + 1) // 2) if fps == 60 else header["length"] + 1)
    assert recording.gif_timing(60, 6) == (2, [3, 4, 3])
    assert recording.gif_timing(15, 3) == (1, [7, 6, 7])


def test_recordings_folders_are_not_committed():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".gitignore")) as f:
        ignored = f.read().split()
    assert {"games/", "recordings/", "runs/", "videos/"} <= set(ignored)
