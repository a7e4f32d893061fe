"""The book's supervised chapters as tasks: each trains a model from nets/ on real data and checks a target.

    digits        MNIST / Fashion-MNIST: an MLP (ReLU, dropout) and a small CNN (Conv2d, MaxPool2d)
    sentiment     movie-review polarity: a bag of embeddings (Embedding, mean, Linear); word vectors
    shakespeare   tiny Shakespeare: a character-level LSTM trained with truncated BPTT

Each module has a Config dataclass, a train(cfg, log=None) -> result dict, and presets for the full run
and a quick one (a data subset, few epochs, a lower bar) used by the tests. log, if given, is called
with a dict after every epoch. The result dict always holds task, metric, value, target, passed,
epochs and seconds; tasks add what a caller may want next (the model, the vocabulary).
"""


class TaskError(ValueError):
    """A request the task cannot meet (a word not in the vocabulary, a text too short): the caller's to fix."""


def make_result(task, metric, value, target, epochs, seconds, lower_is_better=False, **extra):
    """The common result dict; passed says whether value reached target."""
    passed = value <= target if lower_is_better else value >= target
    return {"task": task, "metric": metric, "value": float(value), "target": float(target),
            "lower_is_better": lower_is_better, "passed": bool(passed), "epochs": int(epochs),
            "seconds": float(seconds), **extra}


def minibatches(n, batch_size, rng):
    """Index arrays covering range(n) in a fresh random order, batch_size at a time (last one shorter)."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def subset(n, size):
    """How many examples to use: size when 0 < size < n, else all n."""
    return n if size <= 0 else min(size, n)
