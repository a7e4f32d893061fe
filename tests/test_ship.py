import json
import os
import subprocess
import sys

import agents
from agents.run import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)


def test_ship_exports_playing_weights_with_a_card_and_refuses_worse(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "shipped"
    r = run("scripts.train", "--game", "CartPole-v1", "--total-steps", "3000", "--num-envs", "4",
            "--hidden", "16", "--optimizer", "adam", "--run-dir", str(run_dir), "--quiet")
    assert r.returncode == 0, r.stderr
    r = run("scripts.train", "--resume", str(run_dir), "--total-steps", "4000", "--quiet")
    assert r.returncode == 0, r.stderr
    r = run("scripts.ship", str(run_dir), "--name", "cp", "--episodes", "2", "--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    results = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [x["actions"] for x in results] == ["sampled", "greedy"]  # a PG agent is scored both ways
    result = results[0]
    models, header, rest = load_checkpoint(out / "cp.npz")
    assert rest == {} and list(models) == ["model"] and "rng" not in header and "optim" not in header
    assert models["model"].dtype.name == "float32"
    agent = agents.load(out / "cp.npz")
    assert agent.env["env_id"] == "CartPole-v1"
    text = (out / "cp.md").read_text()
    assert "--total-steps 3000" in text and "--resume" in text and all(json.dumps(x) in text for x in results)
    assert (out / "cp.png").exists()
    # the same agent again is not better: refused, nothing changed
    before = (out / "cp.npz").read_bytes()
    r = run("scripts.ship", str(run_dir), "--name", "cp", "--episodes", "2", "--out-dir", str(out),
            "--seed", "1000")
    assert (r.returncode == 1 and "not shipped" in r.stderr) or result["mean_return"] < 500
    if r.returncode == 1:
        assert (out / "cp.npz").read_bytes() == before
    assert not [n for n in os.listdir(out) if n.startswith(".ship-")]
