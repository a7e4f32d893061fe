"""envs: Atari through Gymnasium and ale-py, vector envs, and recorded games."""
from envs.atari import (PRESETS, UnknownGameError, ale_games, env_spec, make, make_vector, resolve,
                        karpathy_preprocess, karpathy_preprocess_batch, default_preset)
from envs.recording import Recorder, Recording, RecordingError, export, load, record, replay

__all__ = ["PRESETS", "UnknownGameError", "ale_games", "env_spec", "make", "make_vector", "resolve",
           "karpathy_preprocess", "karpathy_preprocess_batch", "default_preset",
           "Recorder", "Recording", "RecordingError", "export", "load", "record", "replay"]
