"""The shipped agents: every checkpoints/<name>.npz loads, plays under scripts.evaluate's code path
(agents.evaluation), and agrees with its card checkpoints/<name>.md.

A card is read for what it must keep, wherever it sits: the settings JSON (the run's config), the
`python -m scripts.evaluate checkpoints/<name>.npz ...` command and the evaluation JSON it printed. A
JSON result belongs to the last such command before it. A card may give one command and name the
flags of its other rows in prose ("`--no-sticky` for NoFrameskip-v4"): a flag the card names is added
to the command when the row's protocol or action rule calls for it, and a flag it never names is not,
so the row must then follow from the command and the file's header alone. The slow test runs each
command and compares what it prints with the card (`pytest -m slow tests/test_checkpoints.py`; 30
Atari games a row, minutes each).
"""
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

import agents
import envs
from agents.evaluation import action_rule, make_eval_env, play_game, play_rule
from scripts.evaluate import build_parser

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem for p in (ROOT / "checkpoints").glob("*.npz"))
STEPS = 300  # agent steps played by each shipped agent in the fast test
SUMMARY = ("mean_return", "std_return", "min_return", "max_return")


def code_spans(text):
    """(offset, code) of every inline `code` span and every line of a fenced block, in text order; an
    inline span broken over lines is joined with single spaces."""
    spans = []
    for block in re.finditer(r"```[^\n]*\n(.*?)```", text, re.S):
        start = block.start(1)
        for line in block.group(1).splitlines(keepends=True):
            spans.append((start, line.strip()))
            start += len(line)
    fenced = [(b.start(), b.end()) for b in re.finditer(r"```.*?```", text, re.S)]
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        if not any(a <= m.start() < b for a, b in fenced):
            spans.append((m.start(), " ".join(m.group(1).split())))
    return sorted(spans)


def evaluate_commands(text, name):
    """(offset, argv) of every `python -m scripts.evaluate checkpoints/<name>.npz ...` on the card."""
    found = []
    for offset, code in code_spans(text):
        for m in re.finditer(r"python -m scripts\.evaluate\b([^#]*)", code):
            argv = shlex.split(m.group(1))
            if argv and argv[0] == f"checkpoints/{name}.npz":
                found.append((offset, argv))
    return found


def json_blocks(text):
    """(offset, object) of every fenced block, or line in one, that holds a JSON object."""
    found = []
    for block in re.finditer(r"```[^\n]*\n(.*?)```", text, re.S):
        body = block.group(1)
        try:
            found.append((block.start(1), json.loads(body)))
            continue
        except ValueError:
            pass
        for line in re.finditer(r"^\s*(\{.*\})\s*$", body, re.M):
            try:
                found.append((block.start(1) + line.start(1), json.loads(line.group(1))))
            except ValueError:
                pass
    return [(offset, obj) for offset, obj in found if isinstance(obj, dict)]


def card(name):
    """What the tests read off a card: its text, settings, and (argv, printed JSON) per result."""
    text = (ROOT / "checkpoints" / f"{name}.md").read_text()
    blocks = json_blocks(text)
    settings = [obj for _, obj in blocks if "agent" in obj and "mean_return" not in obj]
    commands = evaluate_commands(text, name)
    results = []
    for offset, obj in blocks:
        if "mean_return" in obj:
            before = [argv for at, argv in commands if at < offset]
            results.append((command_for(before[-1], obj, text) if before else None, obj))
    return {"text": text, "settings": settings, "commands": commands, "results": results}


def command_for(argv, printed, text):
    """The card's command plus the flags the printed row calls for and the card names (see above)."""
    argv = list(argv)
    named = {" ".join(code.split()[:2]) for _, code in code_spans(text)} | \
        {code.split()[0] for _, code in code_spans(text) if code}
    if printed.get("protocol") == "v4-nosticky" and "--no-sticky" not in argv and "--no-sticky" in named:
        argv.append("--no-sticky")
    rule = str(printed.get("actions", ""))
    flags = parse(argv)
    if rule == "greedy" and not flags.greedy and flags.epsilon is None and "--greedy" in named:
        argv.append("--greedy")
    elif rule.startswith("epsilon-greedy ") and flags.epsilon is None and f"--epsilon {rule.split()[1]}" in named:
        argv += ["--epsilon", rule.split()[1]]
    return argv


def parse(argv):
    """scripts.evaluate's own flags; a card command it would refuse fails the test."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"scripts.evaluate refuses the card's command: {shlex.join(argv)}")


@pytest.fixture(scope="module", params=NAMES)
def shipped(request):
    name = request.param
    assert (ROOT / "checkpoints" / f"{name}.md").is_file(), f"checkpoints/{name}.npz has no card"
    return name, agents.load(ROOT / "checkpoints" / f"{name}.npz"), card(name)


def test_every_card_has_its_checkpoint():
    cards = sorted(p.stem for p in (ROOT / "checkpoints").glob("*.md"))
    assert cards == NAMES and NAMES


def test_card_settings_are_the_files_header(shipped):
    name, agent, c = shipped
    header = agent.header
    assert len(c["settings"]) == 1, f"{name}.md: want one settings JSON, found {len(c['settings'])}"
    settings = c["settings"][0]
    assert settings == header["config"], f"{name}.md: settings differ from the file's config"
    env = header["env"]
    assert settings["agent"] == header["agent"] == agent.kind
    assert settings["preset"] == env["preset"]
    assert envs.resolve(settings["game"]) == env["env_id"]
    assert env["protocol"] == envs.env_spec(env["env_id"], env["preset"], settings["sticky"])["protocol"]
    said = re.search(r"Agent `(\w+)` on `([^`]+)` \(preset `(\w+)`\)", c["text"])
    if said:  # the card's opening line, if it kept one
        assert said.groups() == (agent.kind, env["env_id"], env["preset"]), said.group(0)


def test_card_results_match_their_commands_and_the_header(shipped):
    name, agent, c = shipped
    assert c["commands"], f"{name}.md: no `python -m scripts.evaluate checkpoints/{name}.npz ...` command"
    assert c["results"], f"{name}.md: no evaluation JSON"
    for argv, printed in c["results"]:
        assert argv is not None, f"{name}.md: a result comes before any evaluate command naming the file"
        flags = parse(argv)
        assert printed["checkpoint"] == f"checkpoints/{name}.npz" == flags.checkpoint
        assert printed["game"] == agent.env["env_id"]
        assert printed["episodes"] == flags.episodes
        sticky = not flags.no_sticky
        assert printed["protocol"] == envs.env_spec(agent.env["env_id"], agent.env["preset"], sticky)["protocol"]
        fresh = agents.load(ROOT / "checkpoints" / f"{name}.npz", seed=flags.seed)
        explore = play_rule(fresh, flags.greedy, flags.epsilon)  # the header's eval_epsilon unless --epsilon
        assert printed["actions"] == action_rule(fresh, explore), (shlex.join(argv), printed)
        assert set(printed) == {"checkpoint", "game", "protocol", "actions", "episodes", *SUMMARY}
        assert printed["min_return"] <= printed["mean_return"] <= printed["max_return"]


def test_each_checkpoint_plays_under_the_evaluation_code_path(shipped):
    """A few hundred steps of the card's first evaluation, as scripts.evaluate plays them."""
    name, _, c = shipped
    argv = c["results"][0][0] if c["results"] and c["results"][0][0] else [f"checkpoints/{name}.npz"]
    flags = parse(argv)
    agent = agents.load(ROOT / "checkpoints" / f"{name}.npz", seed=flags.seed)
    explore = play_rule(agent, flags.greedy, flags.epsilon)
    env = make_eval_env(agent, sticky=not flags.no_sticky)
    seen, chosen, told = [], [], []

    def on_step(obs, action, info, reward):
        seen.append(obs.shape)
        chosen.append(action)
        told.append(np.asarray(info, np.float64))  # the probabilities or Q-values behind the action

    try:
        ret, length = play_game(agent, env, flags.seed, explore, max_steps=STEPS, on_step=on_step)
    finally:
        env.close()
    header = agent.header
    assert length == len(chosen) and (length == STEPS or ret != 0)
    assert set(seen) == {tuple(header["obs_shape"])}
    assert env.action_space.n == header["n_actions"] and set(chosen) <= set(range(header["n_actions"]))
    assert all(t.shape == (header["n_actions"],) and np.isfinite(t).all() for t in told)
    assert len(set(chosen)) > 1, f"{name}: one action for {length} steps"


# ----------------------------------------------------------------------------- the card's numbers, replayed

def card_results():
    for name in NAMES:
        for k, (argv, printed) in enumerate(card(name)["results"] if (ROOT / "checkpoints" / f"{name}.md").is_file()
                                            else []):
            yield pytest.param(name, argv, printed, id=f"{name}-{k}")


@pytest.mark.slow
@pytest.mark.parametrize("name, argv, printed", list(card_results()))
def test_card_evaluation_commands_print_the_cards_json(name, argv, printed):
    assert argv is not None, f"{name}.md: a result comes before any evaluate command naming the file"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "scripts.evaluate", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=4 * 3600)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {k: v for k, v in got.items() if k not in SUMMARY} == {k: v for k, v in printed.items() if k not in SUMMARY}
    assert {k: got[k] for k in SUMMARY} == pytest.approx({k: printed[k] for k in SUMMARY}, rel=1e-12), \
        f"python -m scripts.evaluate {shlex.join(argv)}"
