import json
import os
import shutil
import subprocess
import sys

import agents
from agents.run import load_checkpoint
from agents.ship import run_levels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)


def test_ship_exports_playing_weights_with_a_card_and_refuses_worse(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "shipped"
    r = run("scripts.train", "--agent", "pg", "--game", "CartPole-v1", "--total-steps", "3000", "--num-envs", "4",
            "--hidden", "16", "--optimizer", "adam", "--run-dir", str(run_dir), "--quiet")
    assert r.returncode == 0, r.stderr
    r = run("scripts.train", "--resume", str(run_dir), "--total-steps", "4000", "--quiet")
    assert r.returncode == 0, r.stderr
    shutil.copytree(run_dir, tmp_path / "other")  # a run to draw beside it
    r = run("scripts.ship", str(run_dir), "--name", "cp", "--episodes", "2", "--out-dir", str(out),
            "--compare", str(tmp_path / "other"))
    assert r.returncode == 0, r.stderr
    results = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [x["actions"] for x in results] == ["sampled", "greedy"]  # a PG agent is scored both ways
    result = results[0]
    assert result["checkpoint"] == str(out / "cp.npz")  # where it was shipped, as the card's command says
    models, header, rest = load_checkpoint(out / "cp.npz")
    assert rest == {} and list(models) == ["model"] and "rng" not in header and "optim" not in header
    assert models["model"].dtype.name == "float32"
    agent = agents.load(out / "cp.npz")
    assert agent.env["env_id"] == "CartPole-v1"
    text = (out / "cp.md").read_text()
    assert "--total-steps 3000" in text and "--resume" in text and all(json.dumps(x) in text for x in results)
    assert f"`python -m scripts.evaluate {out / 'cp.npz'} --episodes 2 --seed" in text
    stopped = json.loads((run_dir / "config.json").read_text())["resumes"][0]["step"]
    assert stopped >= 3000 and f"# then, after a stop at step {stopped:,}:\n" in text
    assert (out / "cp.png").exists()
    assert "Beside it on the picture" in text and "- other: `python -m scripts.train --agent pg" in text
    assert "| running mean | agent steps | games | wall clock |" in text  # time to each level, from progress.csv
    # CartPole's levels are the run's own (Pong's -10 to +18 mean nothing there), and no Atari protocol
    levels = ",".join(format(v, "g") for v in run_levels(str(run_dir / "progress.csv")))
    assert levels and f"`python -m scripts.inspect RUN_DIR --milestones --levels {levels}`" in text
    assert "| +18 |" not in text and "NoFrameskip" not in text
    assert "```json\n" + "\n".join(r.stdout.strip().splitlines()) + "\n```" in text  # every row in one block
    recorded = json.loads((run_dir / "config.json").read_text())["machine"]  # what ship says it trained on
    assert recorded["cores"] >= 1 and f"a {recorded['cores']}-core CPU machine ({recorded['cpu']})" in text
    # the same agent again is not better: refused, nothing changed
    before = (out / "cp.npz").read_bytes()
    r = run("scripts.ship", str(run_dir), "--name", "cp", "--episodes", "2", "--out-dir", str(out),
            "--seed", "1000", "--no-sticky")
    assert r.returncode == 1 and "not shipped" in r.stderr and f"{result['mean_return']:.2f}" in r.stderr
    # every row is played by a freshly seeded agent, so each is what `scripts.evaluate --seed` prints:
    # CartPole has no sticky actions, and its sampled row comes out the same for both "protocols"
    again = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert len(again) == 4 and again[0] == again[2] == result and again[1] == again[3] == results[1]
    r = run("scripts.evaluate", str(out / "cp.npz"), "--episodes", "2", "--seed", "1000")
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout.strip().splitlines()[-1])
    assert {k: printed[k] for k in ("mean_return", "std_return", "min_return", "max_return")} == \
        {k: result[k] for k in ("mean_return", "std_return", "min_return", "max_return")}
    assert (out / "cp.npz").read_bytes() == before
    assert not [n for n in os.listdir(out) if n.startswith(".ship-")]
    assert "published scores" not in text  # CartPole has none


def results_for(means):
    return [{"protocol": p, "mean_return": m, "episodes": 30} for p, m in means]


def test_a_ship_is_judged_on_the_protocol_the_agent_trained_on():
    from agents.ship import comparison
    new = results_for([("v5-sticky", -1.0), ("v4-nosticky", 12.0)])
    # a no-sticky DQN: better without sticky actions ships, even though its sticky score fell
    assert comparison(new, {"v5-sticky": 2.0, "v4-nosticky": 8.9}, "v4-nosticky") == ("v4-nosticky", 12.0, 8.9)
    assert comparison(new, {"v5-sticky": -3.0, "v4-nosticky": 13.0}, "v4-nosticky") == ("v4-nosticky", 12.0, 13.0)
    # a card without the trained protocol: judged on one both report; first ship: nothing to beat
    assert comparison(new, {"v5-sticky": -2.0}, "v4-nosticky") == ("v5-sticky", -1.0, -2.0)
    assert comparison(new, {}, "v4-nosticky") == ("v4-nosticky", 12.0, None)


def test_shipped_scores_read_the_first_result_of_each_protocol(tmp_path):
    from agents.ship import shipped_scores
    card = tmp_path / "x.md"
    card.write_text("\n".join(['{"protocol": "v5-sticky", "actions": "sampled", "mean_return": 0.67}',
                                '{"protocol": "v5-sticky", "actions": "greedy", "mean_return": 3.5}',
                                '{"protocol": "v4-nosticky", "actions": "sampled", "mean_return": -13.5}']))
    assert shipped_scores(card) == {"v5-sticky": 0.67, "v4-nosticky": -13.5}
    assert shipped_scores(tmp_path / "none.md") == {}


def test_a_breakout_card_sets_its_score_beside_random_human_and_nature_dqn():
    from agents.evaluation import human_normalized
    from agents.ship import references
    assert human_normalized("ALE/Breakout-v5", 1.7) == 0.0
    assert abs(human_normalized("ALE/Breakout-v5", 30.5) - 100.0) < 1e-9
    assert human_normalized("CartPole-v1", 100.0) is None
    rows = [{"protocol": "v4-nosticky", "actions": f"epsilon-greedy {eps}", "episodes": 30, "mean_return": score}
            for eps, score in (("0.05", 16.1), ("0.01", 30.5))]
    text = "\n".join(references("ALE/Breakout-v5", rows))
    assert "| random | 1.7 | 0% |" in text and "| human | 30.5 | 100% |" in text and "401.2" in text
    # one row of the agent's per way of playing, each saying how it played
    assert "| **this agent** (v4-nosticky, epsilon-greedy 0.05, 30 games) | **16.10** | **50%** |" in text
    assert "| **this agent** (v4-nosticky, epsilon-greedy 0.01, 30 games) | **30.50** | **100%** |" in text
    # the published Pong figures say at which epsilon their games were played
    pong = "\n".join(references("ALE/Pong-v5", rows[:1]))
    assert all(f"| {who} |" in pong for who in ("Nature DQN (50M steps, epsilon 0.05)",
                                                 "SB3 zoo DQN (10M steps, epsilon 0.01)"))
    assert references("CartPole-v1", [{"protocol": "gymnasium", "actions": "sampled", "episodes": 2,
                                       "mean_return": 9.0}]) == []


def test_a_run_continued_with_init_ships_a_card_that_counts_all_its_training(tmp_path):
    first, second, third, out = tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "shipped"
    common = ("--agent", "pg", "--game", "CartPole-v1", "--num-envs", "4", "--hidden", "16", "--optimizer", "adam", "--quiet")
    r = run("scripts.train", *common, "--total-steps", "3000", "--run-dir", str(first))
    assert r.returncode == 0, r.stderr
    r = run("scripts.ship", str(first), "--name", "cp", "--episodes", "2", "--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    _, header1, _ = load_checkpoint(out / "cp.npz")
    assert "trained_before" not in header1
    r = run("scripts.train", *common, "--total-steps", "2000", "--init", str(out / "cp.npz"), "--run-dir", str(second))
    assert r.returncode == 0, r.stderr
    record = json.loads((second / "config.json").read_text())["init"]
    import hashlib
    assert record["sha256"] == hashlib.sha256((out / "cp.npz").read_bytes()).hexdigest()
    assert record["step"] == header1["step"] and record["episode"] == header1["episode"]
    # a resume keeps the record
    r = run("scripts.train", "--resume", str(second), "--total-steps", "2500", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((second / "config.json").read_text())["init"] == record
    r = run("scripts.ship", str(second), "--name", "cp", "--episodes", "2", "--out-dir", str(out), "--force")
    assert r.returncode == 0, r.stderr
    _, header2, _ = load_checkpoint(out / "cp.npz")
    assert header2["trained_before"] == record
    text = (out / "cp.md").read_text()
    total = header1["step"] + header2["step"]
    assert f"trained for {total:,} agent steps" in text
    assert f"That is {header1['step']:,} steps" in text and f"then {header2['step']:,} steps" in text
    # the first run's own commands come first, read from the card beside the --init file
    commands = text.split("```bash\n")[1].split("\n```")[0].splitlines()
    assert "--total-steps 3000" in commands[0] and "--init" not in commands[0]
    assert commands[1].startswith("# then, a new run from those weights") and "--init" in commands[2]
    assert "--resume" in commands[4] and "continued from the `--init` weights" in text
    # a third run from that file counts the training of both before it
    r = run("scripts.train", *common, "--total-steps", "1000", "--init", str(out / "cp.npz"), "--run-dir", str(third))
    assert r.returncode == 0, r.stderr
    assert json.loads((third / "config.json").read_text())["init"]["step"] == total


def test_a_card_without_the_init_file_still_names_it():
    from agents.ship import card, earlier_commands, init_record
    init = {"path": "/nowhere/x.npz", "sha256": "ab" * 32, "step": 100, "episode": 3, "wall_seconds": 7200.0}
    config = {"command": ["train.py", "--init", "/nowhere/x.npz"], "init": init, "config": {}}
    assert init_record(config) == init and init_record({"init": {"path": 1}}) is None
    assert earlier_commands(init) is None
    header = {"agent": "dqn", "env": {"env_id": "CartPole-v1", "preset": "none"}, "step": 50, "episode": 2,
              "wall_seconds": 3600.0}
    result = {"checkpoint": "checkpoints/x.npz", "protocol": "gymnasium", "episodes": 2, "mean_return": 9.0}
    text = card("x", config, header, [result], "x.png", 1000)
    assert "trained for 150 agent steps and 5 episodes in 3.00 hours" in text
    assert f"# from the weights of /nowhere/x.npz (sha256 {'ab' * 32})" in text


def test_a_config_json_that_is_not_an_object_is_a_one_line_error(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"")
    (tmp_path / "config.json").write_text("[1]")
    r = run("scripts.ship", str(tmp_path), "--name", "x", "--out-dir", str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "damaged config.json" in r.stderr, r.stderr


def test_keep_snapshots_and_ship_average_ship_the_mean_of_the_last_saves(tmp_path):
    """--keep-snapshots K keeps the playing weights of the last K saves in snapshots/; ship --average K
    exports the mean of checkpoint.npz and the K-1 snapshots before it, and the card says so."""
    import numpy as np
    from agents.run import snapshot_paths
    run_dir, out = tmp_path / "run", tmp_path / "shipped"
    r = run("scripts.train", "--agent", "pg", "--game", "CartPole-v1", "--total-steps", "2000", "--num-envs", "4", "--hidden", "16",
            "--optimizer", "adam", "--batch-steps", "500", "--keep-snapshots", "2", "--run-dir", str(run_dir), "--quiet")
    assert r.returncode == 0, r.stderr
    for total in ("3000", "4000"):  # each run's final save writes a snapshot too
        r = run("scripts.train", "--resume", str(run_dir), "--total-steps", total, "--quiet")
        assert r.returncode == 0, r.stderr
    snaps = snapshot_paths(run_dir)
    assert len(snaps) == 2  # the oldest of the three was removed
    (_, last), (models, head) = load_checkpoint(run_dir / "checkpoint.npz")[:2], load_checkpoint(snaps[-1])[:2]
    assert head["step"] == last["step"] and "optim" not in head and list(models) == ["model"]
    agents.load(snaps[0])  # a snapshot plays like a shipped file
    r = run("scripts.ship", str(run_dir), "--name", "cp", "--episodes", "2", "--out-dir", str(out), "--average", "3")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "1 snapshots before the checkpoint, 2 needed" in r.stderr
    assert not out.exists() or not os.listdir(out)
    r = run("scripts.ship", str(run_dir), "--name", "cp", "--episodes", "2", "--out-dir", str(out), "--average", "2")
    assert r.returncode == 0, r.stderr
    shipped, header, _ = load_checkpoint(out / "cp.npz")
    first = load_checkpoint(snaps[0])[0]["model"].state_dict()
    final = load_checkpoint(run_dir / "checkpoint.npz")[0]["model"].state_dict()
    for name, value in shipped["model"].state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, (first[name] + final[name]) / 2, rtol=1e-6, atol=1e-7)
    assert any(not np.array_equal(first[k], final[k]) for k in final)  # two different saves were averaged
    steps = [load_checkpoint(snaps[0])[1]["step"], last["step"]]
    assert header["averaged_steps"] == steps
    text = (out / "cp.md").read_text()
    assert f"mean of the run's last 2 saves, at steps {steps[0]:,}, {steps[1]:,}" in text


def test_averaging_refuses_different_networks(tmp_path):
    import numpy as np
    import pytest
    from agents.run import averaged_weights, save_checkpoint
    from nets import Linear, Sequential
    header = {"agent": "dqn", "config": {}, "env": {}}
    for name, hidden in (("a", 4), ("b", 4), ("c", 5)):
        save_checkpoint(tmp_path / f"{name}.npz", {"model": Sequential(Linear(3, hidden, rng=np.random.default_rng(
            len(name) + hidden)))}, header)
    mean = averaged_weights([tmp_path / "a.npz", tmp_path / "b.npz"]).state_dict()
    assert all(v.dtype == np.float32 for v in mean.values())
    with pytest.raises(agents.CheckpointError, match="a different network"):
        averaged_weights([tmp_path / "a.npz", tmp_path / "c.npz"])
