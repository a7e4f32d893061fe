"""PPO: GAE and the clipped objective by hand, learning CartPole, exact resume, the agent on Atari."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import agents
from agents import ppo
from agents.evaluation import evaluate
from agents.run import Run, config_dict, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(*args, timeout=300):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_gae_matches_a_hand_computed_example():
    """Two envs, three steps. Env 0: a lost life (terminal) at t=1, so nothing flows back across it
    and it does not bootstrap. Env 1: a time-limit truncation at t=0, which bootstraps from its
    episode's own last observation (next_values[0] = 5) and stops the flow from the next episode."""
    g, lam = 0.9, 0.5
    rewards = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, -1.0]], np.float32)
    values = np.array([[0.5, 1.0], [1.0, 2.0], [0.2, 3.0]], np.float32)
    next_values = np.array([[1.0, 5.0], [0.2, 3.0], [4.0, 6.0]], np.float32)
    terminal = np.array([[0, 0], [1, 0], [0, 0]], np.float32)
    boundary = np.array([[0, 1], [1, 0], [0, 0]], np.float32)
    adv, returns = ppo.gae(rewards, values, next_values, terminal, boundary, g, lam)
    # env 0: t=2 delta = 0 + .9*4 - .2 = 3.4; t=1 terminal: delta = 2 - 1 = 1, A = 1 (no flow from t=2);
    #        t=0 delta = 1 + .9*1 - .5 = 1.4, A = 1.4 + .45*1 = 1.85
    # env 1: t=2 delta = -1 + .9*6 - 3 = 1.4; t=1 delta = 1 + .9*3 - 2 = 1.7, A = 1.7 + .45*1.4 = 2.33;
    #        t=0 truncated: delta = 0 + .9*5 - 1 = 3.5, A = 3.5 (no flow from the next episode)
    expected = np.array([[1.85, 3.5], [1.0, 2.33], [3.4, 1.4]], np.float32)
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    np.testing.assert_allclose(returns, expected + values, rtol=1e-6)


@pytest.mark.parametrize("clip_vloss", [True, False])
def test_clipped_objective_gradient_matches_finite_differences(clip_vloss):
    """The hand-written gradient of the whole loss (clipped surrogate, entropy, value) in float64,
    at points where some ratios and some values sit outside the clip range."""
    rng = np.random.default_rng(0)
    cfg = ppo.Config(clip=0.2, ent_coef=0.05, vf_coef=0.7, clip_vloss=clip_vloss)
    B, A = 16, 5
    out = rng.normal(size=(B, A + 1))
    actions = rng.integers(A, size=B)
    old_logp = np.log(rng.uniform(0.1, 0.5, size=B))
    adv, returns = rng.normal(size=B), rng.normal(size=B)
    old_values = out[:, -1] + rng.normal(scale=0.3, size=B)
    loss, dout, stats = ppo.ppo_loss(out, actions, old_logp, adv, returns, old_values, cfg)
    assert 0 < stats["clipfrac"] < 1  # both branches of the min are exercised
    numeric = np.zeros_like(out)
    for idx in np.ndindex(out.shape):
        for sign in (1, -1):
            o = out.copy()
            o[idx] += sign * 1e-6
            numeric[idx] += sign * ppo.ppo_loss(o, actions, old_logp, adv, returns, old_values, cfg)[0] / 2e-6
    np.testing.assert_allclose(dout, numeric, rtol=1e-5, atol=1e-8)


def test_loss_terms_by_formula():
    """The loss's value from its definition, written out: at ratio 1 the surrogate is -mean(adv)
    of the normalized advantages (0), so the loss is -ent_coef * entropy + vf_coef * value loss."""
    cfg = ppo.Config(clip=0.1, ent_coef=0.01, vf_coef=0.5, clip_vloss=False)
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    out = np.concatenate([logits, [[1.0], [-1.0]]], axis=1)
    actions = np.array([0, 2])
    old_logp = np.log(np.array([0.5, 0.7]))
    entropy = -np.sum(np.exp(logits) * logits, axis=1).mean()
    value_loss = 0.5 * np.mean((np.array([1.0, -1.0]) - np.array([0.0, 1.0])) ** 2)
    loss, _, stats = ppo.ppo_loss(out, actions, old_logp, np.array([1.0, 3.0]), np.array([0.0, 1.0]),
                                  np.zeros(2), cfg)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-12) and stats["clipfrac"] == 0.0
    assert loss == pytest.approx(-0.01 * entropy + 0.5 * value_loss, rel=1e-9)


def test_first_minibatch_has_ratio_one(tmp_path):
    """Before the first gradient step the policy is the one that collected the rollout: every
    ratio is 1 (up to float32 rounding between batch sizes), so nothing is clipped."""
    cfg = ppo.resolved(ppo.Config(game="CartPole-v1", num_envs=2, num_steps=16, minibatches=1, epochs=2,
                                  total_steps=32, seed=3))
    seen = []
    original = ppo.ppo_loss

    def spy(out, actions, old_logp, *rest):
        logp = ppo.log_softmax(out[:, :-1])[np.arange(len(actions)), actions]
        seen.append(np.exp(logp - old_logp))
        return original(out, actions, old_logp, *rest)

    ppo.ppo_loss = spy
    try:
        ppo.train(cfg, Run(tmp_path / "run", config_dict(cfg), {}))
    finally:
        ppo.ppo_loss = original
    assert len(seen) == 2
    np.testing.assert_allclose(seen[0], 1.0, atol=1e-5)
    assert np.abs(seen[1] - 1.0).max() > 1e-4  # the second epoch's policy has moved on


@pytest.mark.parametrize("anneal_ent", [False, True])
def test_entropy_bonus_anneals_with_the_learning_rate(tmp_path, anneal_ent):
    """anneal_ent: each round's loss sees ent_coef * (1 - steps so far / total_steps), as the learning
    rate; off (CleanRL's way), every round sees ent_coef itself. metrics.csv logs the coefficient."""
    cfg = ppo.resolved(ppo.Config(game="CartPole-v1", num_envs=2, num_steps=16, minibatches=1, epochs=1,
                                  total_steps=128, ent_coef=0.02, anneal_ent=anneal_ent, seed=3))
    seen = []
    original = ppo.ppo_loss

    def spy(*args):
        seen.append(args[-1].ent_coef)
        return original(*args)

    ppo.ppo_loss = spy
    try:
        run = Run(tmp_path / "run", config_dict(cfg), {})
        ppo.train(cfg, run)
    finally:
        ppo.ppo_loss = original
    expected = [0.02 * (1 - 32 * k / 128) if anneal_ent else 0.02 for k in range(4)]  # 32 steps a round
    assert seen == pytest.approx(expected, rel=1e-12)
    with open(run.metrics_path) as f:
        logged = [float(row["ent_coef"]) for row in csv.DictReader(f)]
    assert logged == pytest.approx(expected, rel=1e-5)


def test_ppo_learns_cartpole(tmp_path):
    """Fixed seed: 200k steps (about 10 s here), then 20 evaluation games of the sampled policy."""
    cfg = ppo.resolved(ppo.Config(game="CartPole-v1", num_envs=4, clip=0.2, lr=1e-3, total_steps=200_000, seed=0,
                                  epochs=4, minibatches=4))  # CleanRL's ppo.py, lr raised
    run = Run(tmp_path / "run", config_dict(cfg), {})
    ppo.train(cfg, run)
    agent = agents.load(run.checkpoint_path, seed=1)
    assert agent.kind == "ppo"
    result = evaluate(agent, 20, seed=1000, explore=True)
    assert result["mean_return"] >= 475, result


def test_resumed_run_continues_bit_exactly(tmp_path):
    """Stopped after two rounds (as Ctrl-C stops it) and resumed: the same weights, optimizer state
    and episodes as one run straight through."""
    cfg = ppo.resolved(ppo.Config(game="CartPole-v1", num_envs=2, num_steps=32, minibatches=2, total_steps=256,
                                  seed=5))
    straight = Run(tmp_path / "straight", config_dict(cfg), {})
    ppo.train(cfg, straight)

    first = Run(tmp_path / "split", config_dict(cfg), {})

    def stop_after_two_rounds(m):
        if m["event"] == "update" and m["step"] >= 128:
            first.stop_requested = True
    ppo.train(cfg, first, callback=stop_after_two_rounds)
    assert load_checkpoint(first.checkpoint_path)[1]["step"] == 128
    second = Run(tmp_path / "split", config_dict(cfg), {})
    ppo.train(cfg, second, resume=load_checkpoint(first.checkpoint_path))

    a_models, a_header, a_rest = load_checkpoint(straight.checkpoint_path)
    b_models, b_header, b_rest = load_checkpoint(second.checkpoint_path)
    assert a_header["step"] == b_header["step"] == 256 and a_header["rng"] == b_header["rng"]
    for name, value in a_models["model"].state_dict().items():
        np.testing.assert_array_equal(value, b_models["model"].state_dict()[name])
    for name, value in a_rest.items():
        np.testing.assert_array_equal(value, b_rest[name])

    def rows(run):
        with open(run.progress_path) as f:
            return [line.split(",")[:5] for line in f]  # wall_seconds differs
    assert rows(straight) == rows(second) and len(rows(straight)) > 5


def test_nan_updates_are_skipped_then_stop_the_run(tmp_path):
    cfg = ppo.resolved(ppo.Config(game="CartPole-v1", num_envs=2, num_steps=16, total_steps=10_000, seed=0,
                                  max_bad_updates=3))
    run = Run(tmp_path / "run", config_dict(cfg), {})
    messages = []
    run.message = messages.append
    original = ppo.ppo_loss
    ppo.ppo_loss = lambda *a: (float("nan"),) + original(*a)[1:]
    try:
        with pytest.raises(ppo.NumericalError):
            ppo.train(cfg, run)
    finally:
        ppo.ppo_loss = original
    assert len(messages) == 3 and "NaN" in messages[0]
    assert not os.path.exists(run.checkpoint_path)  # never overwritten with a broken network


def test_resolved_defaults_and_bad_values():
    atari = ppo.resolved(ppo.Config())
    assert (atari.preset, atari.network, atari.hidden, atari.sticky) == ("deepmind", "nature", 512, True)
    small = ppo.resolved(ppo.Config(network="small"))
    assert small.hidden == 256
    nature = ppo.resolved(ppo.Config(network="nature"))
    assert nature.hidden == 512
    classic = ppo.resolved(ppo.Config(game="CartPole-v1"))
    assert (classic.preset, classic.network, classic.hidden) == ("classic", "mlp", 64)
    for bad in (dict(minibatches=3), dict(clip=0.0), dict(lr=-1.0), dict(gamma=1.5), dict(network="mlp"),
                dict(preset="karpathy"), dict(num_steps=0), dict(workers=-1),
                dict(workers=3, num_envs=1, minibatches=256), dict(clip=1.0), dict(adam_eps=0.0),
                dict(adam_eps=float("inf"))):
        with pytest.raises(ValueError):
            ppo.resolved(ppo.Config(**bad))


def test_atari_network_acts_saves_and_loads(tmp_path):
    """A few rounds on Pong: the checkpoint rebuilds an agent that reports probabilities and values."""
    cfg = ppo.resolved(ppo.Config(game="pong", num_envs=2, num_steps=16, total_steps=64, seed=0, minibatches=2))
    run = Run(tmp_path / "run", config_dict(cfg), {})
    ppo.train(cfg, run)
    agent = agents.load(run.checkpoint_path)
    assert agent.env["preset"] == "deepmind" and agent.env["protocol"] == "v5-sticky"
    obs = np.zeros((3, 4, 84, 84), np.uint8)
    actions, probs = agent.act(obs, explore=False)
    assert actions.shape == (3,) and probs.shape == (3, 6) and agent.values.shape == (3,)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    header = load_checkpoint(run.checkpoint_path)[1]
    assert "env_state" not in header  # ale-py's vector env cannot be saved mid-game


def test_rounds_log_their_seconds_per_part(tmp_path):
    """metrics.csv splits each round's seconds into the parts scripts.bench ppo compares with PyTorch,
    and the parts add up to the round."""
    cfg = ppo.resolved(ppo.Config(game="CartPole-v1", num_envs=2, num_steps=32, total_steps=192, minibatches=2,
                                  epochs=2))
    run = Run(tmp_path / "run", config_dict(cfg), {})
    ppo.train(cfg, run)
    with open(run.metrics_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for row in rows:
        sec = {k[len("seconds_"):]: float(v) for k, v in row.items() if k.startswith("seconds_")}
        assert min(sec.values()) >= 0 and sec["env"] > 0 and sec["forward"] > 0 and sec["optimizer"] > 0
        parts = sum(sec[k] for k in ("act", "env", "other", "forward", "backward", "optimizer"))
        assert parts == pytest.approx(sec["rollout"] + sec["update"], rel=0.01, abs=1e-4)
        assert sec["act"] + sec["env"] < sec["rollout"] and sec["forward"] + sec["optimizer"] < sec["update"]


def test_bench_ppo_runs_again_with_openblas_own_kernel_where_the_environment_pins_one():
    """With OPENBLAS_CORETYPE set, `bench ppo` measures as set, then the same command in a child process
    without the pin (OpenBLAS reads it once, when numpy loads), and prints both runs' figures together."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell"}
    proc = subprocess.run([sys.executable, "-m", "scripts.bench", "ppo", "--game", "CartPole-v1", "--rounds", "1",
                           "--num-envs", "2", "--num-steps", "16", "--no-torch"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    runs = json.loads(lines[-1])["runs"]
    assert [run["pin"] for run in runs] == ["Haswell", None]  # as set, then OpenBLAS's own choice
    assert runs[0]["kernel"] == "Haswell" and runs[1]["kernel"]
    for run in runs:
        (result,) = run["results"]
        assert result["bench"] == "ppo" and result["blas"]["pin"] == run["pin"]
        numpy_row = result["rows"][1]
        assert numpy_row["name"] == "numpy PPO training" and numpy_row["steps_per_s"] > 0
        parts = numpy_row["ms_per_step"]  # where a training step's time goes, adding up to the whole
        assert list(parts) == ["act", "env", "other", "forward", "backward", "optimizer"]
        assert min(parts.values()) >= 0 and parts["forward"] > 0 and parts["optimizer"] > 0
        assert sum(parts.values()) == pytest.approx(1e3 / numpy_row["steps_per_s"], rel=0.01, abs=0.002)
    assert any(line.split()[:1] == ["optimizer"] for line in lines)  # the table of parts
    assert "  Haswell (OPENBLAS_CORETYPE=Haswell): numpy alone at 1 BLAS thread: no PyTorch run" in lines


def test_train_and_evaluate_scripts(tmp_path):
    run_dir = tmp_path / "cp"
    out = script("scripts.train", "--agent", "ppo", "--game", "CartPole-v1", "--total-steps", "2048",
                 "--num-envs", "2", "--run-dir", str(run_dir), "--quiet")
    assert out.returncode == 0, out.stderr
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["agent"] == "ppo" and config["config"]["network"] == "mlp"
    out = script("scripts.evaluate", str(run_dir / "checkpoint.npz"), "--episodes", "2")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["actions"] == "sampled"


def test_behaviour_cloning_trains_the_policy_head_and_starts_rl(tmp_path):
    """scripts.pretrain --agent ppo: the logits learn the recorded actions by cross-entropy, the
    value output is left alone (its weights do not move), and the file starts a PPO run (--init)."""
    import envs
    from envs.recording import Recorder
    games = tmp_path / "games"
    games.mkdir()
    for seed in (1, 2):
        recorder = Recorder(player="teacher")
        env = envs.make("pong", "deepmind", sticky=True, recorder=recorder)
        env.reset(seed=seed)
        for _ in range(150):  # follow the ball: RIGHT (up) or LEFT (down), NOOP when level with it
            ram = env.unwrapped.ale.getRAM()
            gap = int(ram[54]) - (int(ram[51]) + 12)
            env.step(0 if abs(gap) < 3 else (2 if gap < 0 else 3))
        recorder.save(str(games / f"game-{seed}.npz"))
        env.close()
    out = tmp_path / "clone.npz"
    proc = script("scripts.pretrain", "--from", str(games), "--agent", "ppo", "--out", str(out), "--epochs", "3",
                  "--val-fraction", "0.5", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    agent = agents.load(str(out))
    info = agent.header["pretrained"]
    assert agent.kind == "ppo" and info["loss"].startswith("softmax cross-entropy on the policy")
    assert info["history"][-1]["loss"] < info["history"][0]["loss"]
    cfg = ppo.resolved(ppo.Config(seed=0))  # the network the clone started as: same seed, same draws
    fresh = ppo.Learner(cfg, (4, 84, 84), 6, 1 / 255, np.random.default_rng(0)).model.state_dict()
    last = max(int(k.split(".")[0]) for k in fresh)
    W, b = agent.model.state_dict()[f"{last}.W"], agent.model.state_dict()[f"{last}.b"]
    np.testing.assert_array_equal(W[:, -1], fresh[f"{last}.W"][:, -1])  # the value column never moved
    assert b[-1] == fresh[f"{last}.b"][-1] and not np.array_equal(W[:, :-1], fresh[f"{last}.W"][:, :-1])
    proc = script("scripts.train", "--agent", "ppo", "--init", str(out), "--num-envs", "2", "--num-steps", "16",
                  "--total-steps", "64", "--run-dir", str(tmp_path / "rl"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert agents.load(str(tmp_path / "rl" / "checkpoint.npz")).header["step"] == 64
