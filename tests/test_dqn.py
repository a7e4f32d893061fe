"""agents.dqn: the dueling head's gradients, the (Double) DQN update, CartPole learned, checkpoints,
and training, resuming and evaluating through the scripts."""
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import agents
import envs
import nets
from agents import dqn
from agents.evaluation import action_rule, evaluate, make_eval_env, play_rule
from agents.replay import Batch
from agents.run import Run, Stopwatch, config_dict, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What learns CartPole-v1 fast here (own runs): 4 envs, 3-step Double DQN, a 64-unit MLP.
CARTPOLE = dict(game="CartPole-v1", seed=0, num_envs=4, hidden=64, n_step=3, lr=5e-4, adam_eps=1e-8,
                buffer_size=50_000, learning_starts=1000, batch_size=64, train_freq=2, target_update=500,
                epsilon_steps=10_000, epsilon_end=0.02, total_steps=40_000, eval_every=0, log_every=5000)


def make_run(path, cfg):
    run = Run(str(path), config_dict(cfg), envs.env_spec(cfg.game, cfg.preset, cfg.sticky), cfg.checkpoint_minutes,
              message=lambda text: None)
    run.write_config()
    return run


# ----------------------------------------------------------------------------- the dueling head

def test_dueling_combine_is_value_plus_centred_advantage():
    value = np.array([[2.0], [-1.0]])
    adv = np.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    q = nets.dueling.dueling_combine(value, adv)
    np.testing.assert_allclose(q.mean(axis=1, keepdims=True), value)
    np.testing.assert_allclose(q - q[:, :1], adv - adv[:, :1])


def test_dueling_network_rebuilds_from_its_spec(tmp_path):
    model = dqn.build_q_network((4, 84, 84), 6, "nature", 512, True, np.random.default_rng(0))
    assert isinstance(model.layers[-1], nets.DuelingHead)
    nets.save(tmp_path / "m.npz", model)
    again, _ = nets.load(tmp_path / "m.npz")
    x = np.random.default_rng(1).random((2, 4, 84, 84), dtype=np.float32)
    np.testing.assert_array_equal(again.forward(x), model.forward(x))


# ----------------------------------------------------------------------------- the update

def test_greedy_play_takes_the_argmax_every_step():
    """play_rule(greedy=True) drops the evaluation epsilon (here 1: every move random without it)."""
    rng = np.random.default_rng(0)
    model = dqn.build_q_network((4,), 3, "mlp", 16, True, rng).eval()
    obs = rng.standard_normal((500, 4)).astype(np.float32)
    for greedy in (False, True):
        agent = dqn.QAgent(model, {}, 3, 1.0, eval_epsilon=1.0, seed=1)
        explore = play_rule(agent, greedy)
        actions, q = agent.act(obs, explore)
        assert not explore and action_rule(agent, explore) == ("greedy" if greedy else "epsilon-greedy 1")
        assert (actions == q.argmax(axis=1)).mean() == (1.0 if greedy else pytest.approx(1 / 3, abs=0.1))


def test_play_rule_sets_the_evaluation_epsilon_of_a_dqn_agent_only():
    """play_rule(epsilon=e) replaces the checkpoint's evaluation epsilon; 0 is greedy play. Greedy and an
    epsilon together, an epsilon out of [0, 1], and an epsilon for a policy-gradient agent are refused."""
    rng = np.random.default_rng(0)
    model = dqn.build_q_network((4,), 3, "mlp", 16, True, rng).eval()
    obs = rng.standard_normal((3000, 4)).astype(np.float32)
    for eps, random_share in ((0.6, 0.6), (0.0, 0.0)):
        agent = dqn.QAgent(model, {}, 3, 1.0, eval_epsilon=0.05, seed=2)
        explore = play_rule(agent, epsilon=eps)
        actions, q = agent.act(obs, explore)
        assert action_rule(agent, explore) == (f"epsilon-greedy {eps:g}" if eps else "greedy")
        # a random move is the argmax a third of the time: 1 - 2/3 of the moves leave it
        assert (actions != q.argmax(axis=1)).mean() == pytest.approx(random_share * 2 / 3, abs=0.03)
    agent = dqn.QAgent(model, {}, 3, 1.0, eval_epsilon=0.05)
    for kwargs, says in (({"greedy": True, "epsilon": 0.1}, "not both"), ({"epsilon": 1.5}, "[0, 1]"),
                         ({"epsilon": -0.1}, "[0, 1]")):
        with pytest.raises(ValueError, match=re.escape(says)):
            play_rule(agent, **kwargs)
    assert agent.eval_epsilon == 0.05  # a refused epsilon changes nothing

    class PolicyAgent:
        kind = "pg"
    with pytest.raises(ValueError, match="DQN agent"):
        play_rule(PolicyAgent(), epsilon=0.05)


@pytest.mark.parametrize("eps", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("n", [1, 4])
def test_random_actions_need_no_forward_and_draw_as_before(eps, n):
    """epsilon_greedy runs the network only when some row acts greedily, and its draws from the
    random stream (explore, then the random actions) are those of a version that always runs it:
    the same actions, and greedy rows take the greedy action."""
    calls = []

    def greedy():
        calls.append(1)
        return np.arange(n) % 3

    for seed in range(20):
        rng, ref = np.random.default_rng(seed), np.random.default_rng(seed)
        calls.clear()
        actions = dqn.epsilon_greedy(greedy, eps, n, 6, rng)
        if eps > 0:
            explore = ref.random(n) < eps
            want = np.where(explore, ref.integers(6, size=n), np.arange(n) % 3)
            assert bool(calls) == (not explore.all())
        else:
            want = np.arange(n) % 3
        np.testing.assert_array_equal(actions, want)
        assert rng.bit_generator.state == ref.bit_generator.state


def test_update_charges_its_parts_to_a_clock():
    learner, clock = mlp_learner(), Stopwatch()
    learner.update(random_batch(np.random.default_rng(2)), clock)
    assert set(clock.totals) == {"forward", "backward", "optimizer"}


def mlp_learner(**changes):
    cfg = dqn.resolved(dqn.Config(game="CartPole-v1", hidden=16, **changes))
    return dqn.Learner(cfg, (4,), 2, 1.0, np.random.default_rng(0))


def random_batch(rng, n=8):
    return Batch(rng.standard_normal((n, 4)).astype(np.float32), rng.integers(2, size=n),
                 rng.standard_normal(n).astype(np.float32), rng.choice([0.0, 0.99], n).astype(np.float32),
                 rng.standard_normal((n, 4)).astype(np.float32))


@pytest.mark.parametrize("double", [True, False])
def test_targets_double_and_plain(double):
    learner = mlp_learner(double=double)
    for _, p, _ in learner.target.parameters():  # a target that differs from the online net
        p += 0.3
    batch = random_batch(np.random.default_rng(1))
    q_target = learner.target.forward(batch.next_obs)
    chooser = learner.online.forward(batch.next_obs) if double else q_target
    want = batch.returns + batch.discounts * q_target[np.arange(8), chooser.argmax(axis=1)]
    np.testing.assert_allclose(learner.targets(batch), want, rtol=1e-6)


def test_expected_sarsa_targets_value_the_epsilon_greedy_policy():
    """target_epsilon e: the bootstrap is what an e-greedy policy gets on average, the chosen
    action's value with weight 1 - e + e/A and every other action's with e/A."""
    learner = mlp_learner(target_epsilon=0.2)
    batch = random_batch(np.random.default_rng(4))
    q_target = learner.target.forward(batch.next_obs)  # (8, 2)
    best = learner.online.forward(batch.next_obs).argmax(axis=1)
    weights = np.full((8, 2), 0.2 / 2)
    weights[np.arange(8), best] += 0.8
    want = batch.returns + batch.discounts * (weights * q_target).sum(axis=1)
    np.testing.assert_allclose(learner.targets(batch), want, rtol=1e-5)
    greedy = mlp_learner(target_epsilon=0.0).targets(batch)
    assert np.abs(learner.targets(batch) - greedy).max() > 1e-4  # the option changes the targets
    with pytest.raises(ValueError, match="target_epsilon"):
        dqn.resolved(dqn.Config(game="CartPole-v1", target_epsilon=1.5))


@pytest.mark.parametrize("target_epsilon", [0.0, 0.2])
def test_quantile_targets_are_the_bootstrap_distribution(target_epsilon):
    """QR-DQN: the target atoms are r + gamma^m theta_j(s', best), equally likely; with
    target_epsilon the epsilon-greedy mixture over every action's atoms. Either way their mean is
    the expected-value target on the mean quantiles, as targets() computes it on a plain Q-net."""
    learner = mlp_learner(quantiles=5, target_epsilon=target_epsilon)
    for _, p, _ in learner.target.parameters():
        p += 0.3
    batch = random_batch(np.random.default_rng(6))
    theta = learner.target.forward(batch.next_obs).reshape(8, 2, 5)  # (B, A, K)
    best = learner.online.forward(batch.next_obs).reshape(8, 2, 5).mean(axis=2).argmax(axis=1)
    atoms, weights = learner.quantile_targets(batch)
    if target_epsilon == 0:
        assert weights is None
        want = batch.returns[:, None] + batch.discounts[:, None] * theta[np.arange(8), best]
        np.testing.assert_allclose(atoms, want, rtol=1e-5)
        mean = atoms.mean(axis=1)
    else:
        assert atoms.shape == weights.shape == (8, 10)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(weights.reshape(8, 2, 5)[np.arange(8), best], (0.8 + 0.1) / 5, rtol=1e-6)
        mean = (atoms * weights).sum(axis=1)
    chance = np.full((8, 2), target_epsilon / 2)
    chance[np.arange(8), best] += 1 - target_epsilon
    want = batch.returns + batch.discounts * (chance * theta.mean(axis=2)).sum(axis=1)
    np.testing.assert_allclose(mean, want, rtol=1e-5, atol=1e-6)


def test_quantile_update_learns_and_keeps_each_samples_loss_as_its_priority():
    learner = mlp_learner(quantiles=8, lr=1e-2)
    batch = random_batch(np.random.default_rng(7))
    first = learner.update(batch)
    assert learner.td_errors.shape == (8,) and (learner.td_errors > 0).all()
    assert np.mean(learner.td_errors) == pytest.approx(first["loss"], rel=1e-5)
    for _ in range(30):
        last = learner.update(batch)
    assert last["loss"] < first["loss"] / 2 and not last["skipped"]
    agent = dqn.QAgent(learner.online.eval(), {}, 2, 1.0, eval_epsilon=0.0, quantiles=8)
    _, q = agent.act(batch.obs, explore=False)
    assert q.shape == (8, 2)
    np.testing.assert_allclose(q, learner.online.forward(batch.obs).reshape(8, 2, 8).mean(axis=2), rtol=1e-6)


def test_update_lowers_td_loss_and_skips_nan():
    learner = mlp_learner(lr=1e-2)
    batch = random_batch(np.random.default_rng(2))
    first = learner.update(batch)["loss"]
    for _ in range(30):
        last = learner.update(batch)
    assert last["loss"] < first and not last["skipped"]
    before = {k: v.copy() for k, v in learner.online.state_dict().items()}
    bad = batch._replace(returns=np.full(8, np.nan, np.float32))
    assert learner.update(bad)["skipped"]
    assert learner.bad_in_a_row == 1
    for k, v in learner.online.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_importance_weights_scale_the_update_and_td_errors_are_kept():
    """Weights 1 on half a batch and 0 on the rest: the loss and gradient of that half alone,
    over the whole batch's size. td_errors is Q(s, a) - target for the new priorities."""
    batch = random_batch(np.random.default_rng(3))
    half = Batch(*(f[:4] for f in batch[:5]))  # obs .. next_obs; no weights
    weighted = batch._replace(weights=np.r_[np.ones(4), np.zeros(4)].astype(np.float32))
    a, b = mlp_learner(), mlp_learner()
    q = a.online.forward(batch.obs)[np.arange(8), batch.actions]
    y = a.targets(batch)
    got, want = a.update(weighted), b.update(half)
    assert got["loss"] == pytest.approx(want["loss"] / 2, rel=1e-5)
    assert got["grad_norm"] == pytest.approx(want["grad_norm"] / 2, rel=1e-4)
    np.testing.assert_allclose(a.td_errors, q - y, rtol=1e-5, atol=1e-6)


def test_beta_schedule():
    cfg = dqn.Config(priority_beta=0.4, priority_beta_steps=1000)
    assert dqn.beta_at(0, cfg) == pytest.approx(0.4)
    assert dqn.beta_at(500, cfg) == pytest.approx(0.7)
    assert dqn.beta_at(1000, cfg) == 1.0 == dqn.beta_at(10**7, cfg)


def test_epsilon_schedule():
    cfg = dqn.Config(epsilon_start=1.0, epsilon_end=0.1, epsilon_steps=1000)
    assert dqn.epsilon_at(0, cfg) == 1.0
    assert dqn.epsilon_at(500, cfg) == pytest.approx(0.55)
    assert dqn.epsilon_at(1000, cfg) == pytest.approx(0.1) == dqn.epsilon_at(10**7, cfg)


def test_lr_schedule_decays_linearly_then_holds_and_reaches_the_optimizer(tmp_path):
    cfg = dqn.Config(lr=1e-4, lr_end=3e-5, lr_steps=1000)
    assert dqn.lr_at(0, cfg) == 1e-4 and dqn.lr_at(500, cfg) == pytest.approx(6.5e-5)
    assert dqn.lr_at(1000, cfg) == pytest.approx(3e-5) == dqn.lr_at(10**7, cfg)
    assert dqn.lr_at(10**7, dqn.Config(lr=2e-4)) == 2e-4  # no lr_steps: constant
    short = dict(CARTPOLE, total_steps=3000, learning_starts=500)
    cfg = dqn.resolved(dqn.Config(**dict(short, lr=1e-3, lr_end=1e-4, lr_steps=2000)))
    run = make_run(tmp_path, cfg)
    dqn.train(cfg, run)
    _, header, _ = load_checkpoint(run.checkpoint_path)
    assert header["optim"]["lr"] == pytest.approx(1e-4)  # the last update's rate, after the decay
    cfg = dqn.resolved(dqn.Config(**dict(short, lr=1e-3)))
    run = make_run(tmp_path / "flat", cfg)
    dqn.train(cfg, run)
    assert load_checkpoint(run.checkpoint_path)[1]["optim"]["lr"] == pytest.approx(1e-3)


def test_resolved_defaults_and_bad_values():
    cfg = dqn.resolved(dqn.Config())
    assert (cfg.preset, cfg.network, cfg.hidden) == ("deepmind", "nature", 512)
    cart = dqn.resolved(dqn.Config(game="CartPole-v1"))
    assert (cart.preset, cart.network, cart.hidden) == ("classic", "mlp", 128)
    for bad in (dict(preset="karpathy"), dict(game="CartPole-v1", network="nature"), dict(lr=0.0),
                dict(n_step=0), dict(optimizer="sgd"), dict(tau=0.0), dict(epsilon_end=1.5),
                dict(buffer_size=1000, learning_starts=900), dict(priority_alpha=1.5), dict(priority_beta=-0.1),
                dict(prioritized=True, workers=2), dict(lr_steps=-1), dict(quantiles=-1), dict(lr_end=-1e-4), dict(lr_end=float("nan"))):
        with pytest.raises(ValueError):
            dqn.resolved(dqn.Config(**bad))


# ----------------------------------------------------------------------------- learning and checkpoints

@pytest.mark.parametrize("prioritized, quantiles", [(False, 0), (True, 0), (False, 32)])
def test_learns_cartpole(tmp_path, prioritized, quantiles):
    """Mean >= 195 over 20 evaluation games (epsilon 0.05), from a fixed seed; uniform replay,
    prioritized (beta rising to 1 over the run), and QR-DQN's 32 quantiles."""
    cfg = dqn.resolved(dqn.Config(**CARTPOLE, prioritized=prioritized, priority_beta_steps=CARTPOLE["total_steps"],
                                  quantiles=quantiles))
    run = make_run(tmp_path, cfg)
    dqn.train(cfg, run)
    agent = agents.load(run.checkpoint_path, seed=0)
    assert agent.kind == "dqn" and agent.eval_epsilon == 0.05 and agent.quantiles == quantiles
    summary = evaluate(agent, 20, seed=0)
    assert summary["mean_return"] >= 195, summary


def test_atari_checkpoint_loads_acts_and_resumes(tmp_path):
    """Breakout (lives, game ends) through the Nature net with a dueling head: train a few hundred
    steps with updates on, load the checkpoint as a playing agent, then resume the run."""
    cfg = dqn.resolved(dqn.Config(game="breakout", dueling=True, total_steps=240, buffer_size=2000,
                                  learning_starts=100, batch_size=4, epsilon_steps=100, eval_every=0,
                                  log_every=100))
    run = make_run(tmp_path, cfg)
    events = []
    learner = dqn.train(cfg, run, callback=events.append)
    assert learner.updates > 10
    assert any(e["event"] == "update" and "loss" in e and "update" in e["seconds"] for e in events)
    models, header, rest = load_checkpoint(run.checkpoint_path)
    assert set(models) == {"model", "target"} and header["agent"] == "dqn" and header["step"] == 240
    assert header["obs_shape"] == [4, 84, 84] and header["obs_scale"] == pytest.approx(1 / 255)
    assert any(k.startswith("optim.") for k in rest)
    agent = agents.load(run.checkpoint_path)
    env = envs.make(agent.env["env_id"], agent.env["preset"], seed=0)
    obs, _ = env.reset(seed=0)
    env.close()
    actions, q = agent.act(obs[None], explore=False)
    assert actions.shape == (1,) and q.shape == (1, 4) and q.dtype == np.float32
    np.testing.assert_allclose(q, learner.online.forward(obs[None].astype(np.float32) / 255), rtol=1e-5)
    # resume: weights, target, optimizer and counters come back; the step goes on from 240
    more = dataclasses.replace(cfg, total_steps=300)
    again = Run(str(tmp_path), config_dict(more), run.env, message=lambda text: None)
    resumed = dqn.train(more, again, resume=(models, header, rest))
    assert again.step == 300 and resumed.updates >= learner.updates and resumed.opt.t >= learner.opt.t
    assert load_checkpoint(again.checkpoint_path)[1]["step"] == 300
    # metrics.csv: one row per log_every steps, the resume going on from the checkpoint's step
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [100, 200, 300]
    assert rows[0]["loss"] == rows[2]["loss"] == ""  # not learning yet; refilling the buffer after the resume
    assert float(rows[1]["loss"]) >= 0 and float(rows[1]["q_mean"]) and float(rows[1]["seconds_update"]) > 0
    assert int(rows[0]["updates"]) == 0 < int(rows[1]["updates"]) <= learner.updates == int(rows[2]["updates"])


def test_resume_drops_metrics_rows_written_after_the_checkpoint(tmp_path):
    """A run killed between checkpoints logged rows the resumed run will log again."""
    run = Run(str(tmp_path), {}, {}, message=lambda text: None)
    for step in (100, 200, 300):
        run.step = step
        run.log_update({"loss": 0.5, "skipped": False, "seconds": {"act": 1.0}, "note": "text"}
                       if step > 100 else {"epsilon": 1.0})
    rows = read_csv(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["step", "wall_seconds", "epsilon", "loss", "skipped", "seconds_act"]
    assert rows[0]["loss"] == "" and rows[1]["loss"] == "0.5" and rows[2]["skipped"] == "0"
    again = Run(str(tmp_path), {}, {}, message=lambda text: None)
    again.restore({"step": 200, "episode": 0})
    assert [r["step"] for r in read_csv(tmp_path / "metrics.csv")] == ["100", "200"]


# ----------------------------------------------------------------------------- through the scripts

def script(*args, env=None):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_resume_and_evaluate_scripts(tmp_path):
    """CARTPOLE's recipe through the command lines, stopped halfway and resumed: it must still learn."""
    run_dir = str(tmp_path / "run")
    recipe = [f"--{k.replace('_', '-')}={v}" for k, v in CARTPOLE.items() if k not in ("total_steps", "eval_every")]
    script("scripts.train", "--agent", "dqn", *recipe, "--total-steps", "20000", "--eval-every", "20000",
           "--eval-episodes", "2", "--save-buffer", "true", "--quiet", "--run-dir", run_dir)
    assert os.path.exists(os.path.join(run_dir, "replay.npz"))
    first = load_checkpoint(os.path.join(run_dir, "checkpoint.npz"))[1]
    assert first["step"] == 20000
    # Resumed as a user would, without --agent: the run's own agent picks the BLAS threads (auto for
    # DQN), not --agent's default (pg: 1), which once halved a resumed Atari DQN run's speed.
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    proc = script("scripts.train", "--resume", run_dir, "--total-steps", "40000", "--quiet", env=env)
    assert "refilling" not in proc.stderr  # the saved buffer was used
    with open(os.path.join(run_dir, "config.json")) as f:
        record = json.load(f)
    assert record["resumes"][-1]["blas_threads"].startswith("auto") and record["config"]["agent"] == "dqn"
    header = load_checkpoint(os.path.join(run_dir, "checkpoint.npz"))[1]
    assert header["step"] == 40000 and header["updates"] > first["updates"]
    steps = [int(r["step"]) for r in read_csv(os.path.join(run_dir, "progress.csv"))]
    assert steps and steps == sorted(steps) and steps[-1] <= 40000
    evals = read_csv(os.path.join(run_dir, "eval.csv"))
    assert [int(r["step"]) for r in evals] == [20000, 40000]
    assert set(evals[0]) == {"step", "mean_return", "std_return", "episodes", "wall_seconds"}
    proc = script("scripts.evaluate", os.path.join(run_dir, "checkpoint.npz"), "--episodes", "10")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 10 and result["game"] == "CartPole-v1"
    # CartPole-v1's solved bar; random play scores about 22 (measured here: 310 from this seed)
    assert result["mean_return"] >= 195, result
    assert result["actions"].startswith("epsilon-greedy ")
    # --greedy: the Q-network's argmax every step, none of the evaluation epsilon's random moves
    proc = script("scripts.evaluate", os.path.join(run_dir, "checkpoint.npz"), "--episodes", "2", "--seed", "7",
                  "--greedy")
    greedy = json.loads(proc.stdout.strip().splitlines()[-1])
    agent = agents.load(os.path.join(run_dir, "checkpoint.npz"))
    by_hand = []
    for seed in (7, 8):
        env = make_eval_env(agent)
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            action = int(dqn.q_values(agent.model, obs[None], agent.obs_scale).argmax())
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + reward, terminated or truncated
        env.close()
        by_hand.append(total)
    assert greedy["actions"] == "greedy"
    assert (greedy["min_return"], greedy["max_return"]) == (min(by_hand), max(by_hand))
    # --epsilon 0 plays those greedy games; --epsilon 1 makes every move random, and says so
    for eps, says, same in (("0", "greedy", True), ("1", "epsilon-greedy 1", False)):
        proc = script("scripts.evaluate", os.path.join(run_dir, "checkpoint.npz"), "--episodes", "2", "--seed", "7",
                      "--epsilon", eps)
        played = json.loads(proc.stdout.strip().splitlines()[-1])
        assert played["actions"] == says
        assert ((played["min_return"], played["max_return"]) == (min(by_hand), max(by_hand))) == same
    for bad, says in ((["--epsilon", "2"], "[0, 1]"), (["--greedy", "--epsilon", "0.1"], "not both")):
        proc = subprocess.run([sys.executable, "-m", "scripts.evaluate", os.path.join(run_dir, "checkpoint.npz"),
                               *bad], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # scripts.ship scores a DQN agent at its evaluation epsilon, then at SB3's zoo's 0.01: each row what
    # scripts.evaluate prints (the shipped file is the run's checkpoint, exported for playing)
    proc = script("scripts.ship", run_dir, "--name", "cp", "--episodes", "2", "--seed", "7", "--out-dir",
                  str(tmp_path / "shipped"))
    rows = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["actions"] for r in rows] == [result["actions"], "epsilon-greedy 0.01"]
    text = (tmp_path / "shipped" / "cp.md").read_text()
    assert "`--greedy` for the best action" in text and "`--epsilon 0.01`" in text
    for extra, shipped in (([], rows[0]), (["--epsilon", "0.01"], rows[1])):
        proc = script("scripts.evaluate", str(tmp_path / "shipped" / "cp.npz"), "--episodes", "2", "--seed", "7",
                      *extra)
        again = json.loads(proc.stdout.strip().splitlines()[-1])
        del again["checkpoint"], shipped["checkpoint"]
        assert again == shipped


def test_quantile_run_from_the_command_line_and_its_init_rules(tmp_path):
    """--quantiles K trains QR-DQN; its checkpoint plays through agents.load and scripts.evaluate;
    --init from it keeps K (it shapes the network), and a different K is a one-line error; a plain
    DQN file starts a run with --quantiles K."""
    ckpt = str(tmp_path / "qr" / "checkpoint.npz")
    small = ["--agent", "dqn", "--game", "CartPole-v1", "--learning-starts", "500", "--buffer-size", "5000",
             "--eval-every", "0", "--quiet"]
    script("scripts.train", *small, "--total-steps", "1200", "--hidden", "16", "--quantiles", "4",
           "--run-dir", str(tmp_path / "qr"))
    agent = agents.load(ckpt)
    assert agent.quantiles == 4 and agent.model.forward(np.zeros((1, 4), np.float32)).shape == (1, 2 * 4)
    result = json.loads(script("scripts.evaluate", ckpt, "--episodes", "2").stdout.strip().splitlines()[-1])
    # 1,200 steps teach nothing (test_learns_cartpole holds QR-DQN's learning bar): the command must print
    # the games that agent plays, the same as agents.evaluation plays them with the same seeds
    played = evaluate(agent, 2, seed=0)
    assert result["episodes"] == 2 and result["actions"] == "epsilon-greedy 0.05"
    assert [result[k] for k in ("mean_return", "min_return", "max_return")] == \
        [played[k] for k in ("mean_return", "min_return", "max_return")]
    script("scripts.train", *small, "--total-steps", "600", "--init", ckpt, "--run-dir", str(tmp_path / "again"))
    with open(tmp_path / "again" / "config.json") as f:
        config = json.load(f)["config"]
    assert (config["quantiles"], config["hidden"]) == (4, 16)
    script("scripts.train", *small, "--total-steps", "600", "--hidden", "16", "--run-dir", str(tmp_path / "plain"))
    script("scripts.train", *small, "--total-steps", "600", "--init", str(tmp_path / "plain" / "checkpoint.npz"),
           "--quantiles", "4", "--run-dir", str(tmp_path / "widened"))  # a plain file starts a QR network
    assert agents.load(str(tmp_path / "widened" / "checkpoint.npz")).quantiles == 4
    for other in ("0", "8"):
        proc = subprocess.run([sys.executable, "-m", "scripts.train", *small, "--init", ckpt, "--quantiles", other,
                               "--run-dir", str(tmp_path / f"bad{other}")], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2 and "does not fit" in proc.stderr and "Traceback" not in proc.stderr
        assert not os.path.exists(tmp_path / f"bad{other}")


@pytest.mark.parametrize("setting, trained, evaluated", [("auto", True, True), ("auto", False, False),
                                                          ("false", True, False), ("true", False, True)])
def test_eval_sticky_picks_the_protocol_of_the_evaluation_games(monkeypatch, setting, trained, evaluated):
    """--eval-sticky false scores a run that trains with sticky actions on NoFrameskip-v4 (the DQN
    protocol) in eval.csv; auto keeps the training protocol."""
    import agents.evaluation
    played, logged = [], []

    def fake_evaluate(player, episodes, seed, sticky, explore):
        played.append((episodes, sticky, explore))
        return {"mean_return": 1.0, "std_return": 0.0, "episodes": episodes}

    monkeypatch.setattr(agents.evaluation, "evaluate", fake_evaluate)
    monkeypatch.setattr(agents.evaluation.EvalLog, "start", lambda self, step: None)
    monkeypatch.setattr(agents.evaluation.EvalLog, "append", lambda self, step, summary: logged.append(step))
    cfg = dqn.resolved(dqn.Config(game="pong", sticky=trained, eval_sticky=setting, eval_episodes=3, eval_every=100))
    agent = type("Agent", (), dict(model=None, env={}, n_actions=6, obs_scale=1.0))()
    run = type("Run", (), dict(step=0, episode=0, video_every=0, dir="."))()
    side = dqn.side_games(cfg, agent, run, None)
    run.step = 100
    assert side()
    assert played == [(3, evaluated, False)] and logged == [100]
    with pytest.raises(ValueError, match="eval_sticky"):
        dqn.resolved(dqn.Config(game="pong", eval_sticky="yes please"))


@pytest.mark.parametrize("dueling", [True, False])
def test_a_plain_dqn_file_starts_a_quantile_network_that_plays_as_it_did(dueling):
    """init_weights: every quantile of an action starts at the plain network's Q-value for it, so
    Q (the mean), the greedy action and each quantile match the file; other sizes are refused."""
    rng = np.random.default_rng(3)
    plain = dqn.build_q_network((4,), 3, "mlp", 16, dueling, rng)
    header = {"config": {"quantiles": 0}}
    cfg = dqn.resolved(dqn.Config(game="CartPole-v1", hidden=16, dueling=dueling, quantiles=5))
    qr = dqn.build_q_network((4,), 3, "mlp", 16, dueling, rng, quantiles=5)
    qr.load_state_dict(dqn.init_weights(({"model": plain}, header), cfg))
    x = rng.standard_normal((6, 4)).astype(np.float32)
    q = plain.forward(x)
    atoms = dqn.per_action(qr.forward(x), 5)  # (6, 3, 5)
    np.testing.assert_allclose(atoms, np.repeat(q[:, :, None], 5, axis=2), rtol=1e-5, atol=1e-6)
    assert np.array_equal(dqn.mean_q(qr.forward(x), 5).argmax(axis=1), q.argmax(axis=1))
    same = dqn.init_weights(({"model": plain}, header), dataclasses.replace(cfg, quantiles=0))
    assert all(np.array_equal(same[k], v) for k, v in plain.state_dict().items())
    with pytest.raises(ValueError, match="quantiles"):
        dqn.init_weights(({"model": qr}, {"config": {"quantiles": 5}}), dataclasses.replace(cfg, quantiles=8))


@pytest.mark.parametrize("quantiles", [50, 200])
def test_atari_quantile_network_saves_and_loads(tmp_path, quantiles):
    """The Pong QR-DQN (Nature trunk, dueling head, K quantiles of 6 actions) is not mistaken for a
    forged, implausibly large file by nets.load's size bound (stop 28: resuming its run failed so)."""
    model = dqn.build_q_network((4, 84, 84), 6, "nature", 512, True, np.random.default_rng(0), quantiles)
    nets.save(tmp_path / "q.npz", model)
    again, _ = nets.load(tmp_path / "q.npz")
    x = np.random.default_rng(1).random((2, 4, 84, 84), dtype=np.float32)
    np.testing.assert_array_equal(again.forward(x), model.forward(x))
    assert again.forward(x).shape == (2, 6 * quantiles)


def test_bench_dqn_vs_torch_times_both_loops_part_by_part():
    pytest.importorskip("torch")
    proc = script("scripts.bench", "dqn", "--vs-torch", "--recipe", "cleanrl", "--warmup", "300", "--updates", "2",
                  "--chunk", "1", "--threads", "1", "--kernel", "as-set")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "dqn-vs-torch" and result["recipe"] == "cleanrl" and result["n_step"] == 1
    parts = result["threads"]["1"]["ms_per_update"]
    for side in ("numpy", "torch"):
        assert parts[side]["forward"] > 0 and parts[side]["backward"] > 0 and parts[side]["optimizer"] > 0
    assert result["threads"]["1"]["ratio"] > 0 and result["warmup_steps_per_s"]["torch"] > 0


def test_bench_evaluate_parts_time_a_game_its_env_and_its_forwards():
    from scripts import bench_evaluate
    from scripts.common import ThreadPolicy
    rng = np.random.default_rng(0)
    model = dqn.build_q_network((4,), 2, "mlp", 8, True, rng).eval()
    agent = dqn.QAgent(model, envs.env_spec("CartPole-v1", "classic", False), 2, 1.0, eval_epsilon=0.05)

    class Args:
        games, seed = 2, 0
    result = bench_evaluate.measure(agent, Args, False, False, ThreadPolicy(1))
    assert result["games"] == 2 and result["steps"] > 0 and result["threads"] == "1"
    assert result["game_ms_per_step"] > 0 and result["act_ms"] > 0 and result["ratio"] > 0
