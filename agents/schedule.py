"""Piecewise schedules by agent step, written as text: "0:1e-3,6330000:3e-4" is 1e-3 from step 0 and
3e-4 from step 6,330,000 on. A recipe that lowered a learning rate by hand on a resume (the shipped
Pong agents did) says so in one setting, and one command replays it (hyperparams/)."""
import functools
import math


@functools.lru_cache(maxsize=64)  # a loop asks for its schedule at every update
def parse_schedule(text, name="schedule", positive=True):
    """'0:1e-3,6330000:3e-4' -> ((0, 0.001), (6330000, 0.0003)); '' -> (). ValueError naming `name`
    for anything else: steps must be whole numbers >= 0 in increasing order, values finite (and > 0
    with positive)."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be text like '0:1e-3,5000000:5e-4', got {text!r}")
    if not text.strip():
        return ()
    points = []
    for part in text.split(","):
        step, sep, value = part.partition(":")
        try:
            if not sep:
                raise ValueError
            step, value = int(step.strip().replace("_", "")), float(value)
        except ValueError:
            raise ValueError(f"{name}: {part.strip()!r} is not STEP:VALUE (as in '0:1e-3,5000000:5e-4')") from None
        if step < 0 or (points and step <= points[-1][0]):
            raise ValueError(f"{name}: steps must be >= 0 and increasing, got {step} after "
                             f"{points[-1][0] if points else 'the start'}")
        if not math.isfinite(value) or (positive and value <= 0):
            raise ValueError(f"{name}: the value at step {step} must be {'> 0' if positive else 'finite'}, got {value}")
        points.append((step, value))
    return tuple(points)


def scheduled(points, step, default):
    """The value in force at agent step `step`: the last point at or before it, else `default`."""
    value = default
    for start, v in points:
        if start > step:
            break
        value = v
    return value
