"""Recipes: an agent's settings in a file, as RL Zoo keeps them in hyperparams/. A recipe is a YAML
mapping of Config fields (hyperparams/pong-dqn.yml), or a run's config.json, whose "config" member
starts a sibling run. Every error is a ValueError of one line naming the file and the key."""
import dataclasses
import difflib
import json
import math
import os

import yaml


# RL Zoo's (SB3's) names of settings that have another name here, for the hint of an unknown key
ZOO_NAMES = {"learning_rate": "lr", "n_envs": "num_envs", "n_timesteps": "total_steps", "n_steps": "num_steps",
             "n_epochs": "epochs", "clip_range": "clip", "exploration_final_eps": "epsilon_end",
             "exploration_initial_eps": "epsilon_start", "target_update_interval": "target_update",
             "max_grad_norm": "max_grad_norm", "env": "game", "env_id": "game"}


def read_recipe(path):
    """The settings in `path` as a dict: a YAML file's top-level mapping, or a run's config.json's
    "config" member (a run dir stands for its config.json). Loaded with yaml.safe_load only."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = data["config"]  # a run's config.json
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise ValueError(f"{path}: not valid YAML{at} ({getattr(e, 'problem', None) or 'cannot parse'})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"{path}: a recipe is a mapping of settings (name: value), got {type(data).__name__}")
    return {key.replace("-", "_"): value for key, value in data.items()}


def recipe_changes(cls, settings, path):
    """{field: value} for the dataclass cls from a recipe's settings, each checked against the field's
    type; ValueError naming the first unknown key or bad value. YAML 1.1 reads 1e-4 as text: numbers
    written so are taken as numbers; a schedule may also be a mapping {step: value}."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    agent = cls().agent if "agent" in fields else cls.__module__
    changes = {}
    for key, value in settings.items():
        if key not in fields:
            close = ([ZOO_NAMES[key]] if ZOO_NAMES.get(key) in fields
                     else difflib.get_close_matches(key, list(fields), n=1))
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"{path}: unknown key {key!r} for agent {agent}{hint}")
        changes[key] = typed(fields[key], value, path)
    return changes


def typed(field, value, path):
    """value as field's type (bool, int, float or str), or a ValueError naming the key."""
    kind = field.type if isinstance(field.type, type) else {"bool": bool, "int": int, "float": float}.get(
        str(field.type), str)
    what = {bool: "true or false", int: "a whole number", float: "a finite number"}.get(kind, "text")
    bad = ValueError(f"{path}: {field.name} must be {what}, got {value!r}")
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if kind is str:  # `preset:` left empty is "", `eval_sticky: false` is "false"
        if isinstance(value, dict) and field.name.endswith("_schedule"):  # {0: 1e-3, 5000000: 5e-4}
            return ",".join(f"{k}:{v}" for k, v in value.items())
        if isinstance(value, (list, dict)):
            raise bad
        return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad
    try:
        number = float(value.replace("_", "")) if isinstance(value, str) else value
    except ValueError:
        raise bad from None
    if not math.isfinite(number):
        raise bad
    if kind is int:
        if number != int(number):
            raise bad
        return int(number)
    return float(number)
