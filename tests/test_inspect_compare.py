"""scripts.inspect RUN --compare OTHER / --milestones: figures read from progress.csv, checked by hand."""
import json

import pytest

from scripts import inspect

HEADER = "step,episode,return,length,running_mean,wall_seconds\n"


def write_run(folder, rows, first_episode=100):
    """rows: (step, running_mean, wall_seconds); one game per row, numbered from first_episode."""
    folder.mkdir()
    lines = [f"{step},{first_episode + i},{mean:.0f},1000,{mean:.4f},{secs}" for i, (step, mean, secs) in enumerate(rows)]
    (folder / "progress.csv").write_text(HEADER + "\n".join(lines) + "\n")
    return folder


@pytest.fixture
def two_runs(tmp_path):
    # fast: 1,000 steps a second; slow: better per step but 4 times slower in wall clock
    fast = write_run(tmp_path / "fast", [(100_000, -20, 100), (200_000, -12, 200), (300_000, -9, 300),
                                         (400_000, 1, 400)])
    slow = write_run(tmp_path / "slow", [(100_000, -15, 400), (200_000, -5, 800), (300_000, 2, 1200),
                                         (400_000, 11, 1600)])
    return fast, slow


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_milestones_are_the_first_game_at_or_above_each_level(two_runs, capsys):
    fast, _ = two_runs
    assert inspect.main([str(fast), "--milestones"]) == 0
    found = last_json(capsys)["milestones"]["fast"]
    assert [(r["level"], r["step"], r["episode"], r["minutes"]) for r in found] == [
        (-10, 300_000, 102, 5.0), (0, 400_000, 103, 6.7), (10, None, None, None), (18, None, None, None)]


def test_milestones_wait_for_a_full_window_of_games(tmp_path, capsys):
    """A clone's first games can score well: a mean of 3 games is no running mean of 100."""
    clone = write_run(tmp_path / "clone", [(5_000, 12, 1), (10_000, 11, 2), (15_000, -5, 3), (500_000, -3, 60),
                                           (600_000, 1, 70)], first_episode=98)
    assert inspect.main([str(clone), "--milestones"]) == 0
    found = last_json(capsys)["milestones"]["clone"]
    assert [(r["level"], r["step"], r["episode"]) for r in found] == [
        (-10, 15_000, 100), (0, 600_000, 102), (10, None, None), (18, None, None)]


def test_compare_at_equal_steps_and_equal_wall_clock(two_runs, tmp_path, capsys):
    fast, slow = two_runs
    out = tmp_path / "curves.png"
    assert inspect.main([str(fast / "progress.csv"), "--compare", str(slow), "--label", "A", "--out", str(out),
                         "--levels", "0"]) == 0
    result = last_json(capsys)
    assert result["milestones"]["A"][0]["step"] == 400_000 and result["milestones"]["slow"][0]["step"] == 300_000
    # equal steps: both ran 400k; at 300k the slow run is ahead
    assert result["steps"][2] == {"step": 300_000, "A": -9.0, "slow": 2.0}
    # equal wall clock: the shortest run lasted 400 s; at 400 s (6.7 min) the fast run is ahead
    assert result["minutes"][-1] == {"minutes": 6.7, "A": 1.0, "slow": -15.0}
    assert result["minutes"][0] == {"minutes": 1.7, "A": -20.0, "slow": None}  # slow: no game finished yet
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["{tmp}", "--milestones"], "not a run dir"),
    (["{fast}", "--compare", "{fast}"], "same name"),
    (["{fast}", "--milestones", "--levels", "x"], "--levels x"),
    (["{fast}", "--compare", "{slow}", "--out", "{tmp}/nope/c.png"], "no such directory"),
    (["{fast}", "--compare", "{slow}", "--label", "a", "--label", "b", "--label", "c"], "--label given 3 times"),
])
def test_bad_input_is_one_line_and_exit_2(two_runs, tmp_path, capsys, args, message):
    fast, slow = two_runs
    args = [a.format(tmp=tmp_path, fast=fast, slow=slow) for a in args]
    with pytest.raises(SystemExit) as e:
        inspect.main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and message in err and len(err.splitlines()) == 1
