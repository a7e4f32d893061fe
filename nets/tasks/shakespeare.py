"""The recurrence chapters: a character-level LSTM on tiny Shakespeare, trained with truncated BPTT.

Model: Embedding(chars, embed) -> LSTM(embed, hidden) -> Linear(hidden, chars), softmax cross-entropy
on the next character. The text's first 90% is training, the last 10% validation (never shuffled:
the split is by position, so validation is unseen text). Training cuts the training text into
batch_size parallel streams and walks them seq_len characters at a time; the LSTM state carries
from one window to the next (so it sees long context) but gradients stop at window edges.
"""
import time
from dataclasses import dataclass, replace

import numpy as np

from nets.data import ensure_files, load_text
from nets.layers import Embedding, Linear
from nets.losses import SoftmaxCrossEntropy, softmax
from nets.model import Sequential
from nets.optim import Adam, clip_grad_norm
from nets.recurrent import LSTM
from nets.tasks import TaskError, make_result


@dataclass
class ShakespeareConfig:
    hidden: int = 512  # LSTM state size
    embed: int = 64  # character embedding size
    seq_len: int = 100  # characters per truncated-BPTT window
    batch_size: int = 32  # parallel streams through the training text
    epochs: int = 3  # passes over the training text (validation 1.718, 1.590, 1.541 after 1, 2, 3)
    lr: float = 2e-3  # Adam learning rate in the first epoch
    lr_decay: float = 0.7  # learning rate is multiplied by this after every epoch
    clip: float = 5.0  # global gradient-norm limit per window
    held_out: float = 0.1  # the last fraction of the text, used for validation
    train_chars: int = 0  # training characters used, from the front (0: all of the 90%)
    val_chars: int = 0  # validation characters scored, from its front (0: all of the 10%)
    text_path: str = None  # any UTF-8 text file instead of tiny Shakespeare
    seed: int = 0  # seeds weights and the window offsets
    target: float = 1.60  # validation cross-entropy (nats per character) to reach or go below
    data_dir: str = None  # local data folder (None: $GROK_ARCADE_DATA, then cache, then download)


def full_config(**overrides):
    return replace(ShakespeareConfig(), **overrides)


def quick_config(**overrides):
    """A small, fast version: 300k characters, a small LSTM, one epoch, a lower bar. The bar is below what
    a bigram table reaches (2.58 nats on the same 300k characters, 2.49 on the whole training text);
    the run measured 2.17."""
    return replace(ShakespeareConfig(hidden=64, embed=16, seq_len=50, batch_size=32, epochs=1, lr=1e-2,
                                     train_chars=300_000, val_chars=20_000, target=2.3), **overrides)


def check_data(cfg):
    """Raise DataError now, not after other tasks trained, if the text cannot be had."""
    if cfg.text_path is None:
        ensure_files("shakespeare", cfg.data_dir)
    else:
        load_text(cfg.text_path)


class CharLSTM(Sequential):
    """Embedding -> LSTM -> Linear over (N, T) character ids, giving logits (N, T, V).

    forward(ids, state) starts the LSTM from state (None: zeros); final_state is where it ended."""

    def __init__(self, vocab_size, embed, hidden, *, rng=None, dtype=np.float32):
        super().__init__(Embedding(vocab_size, embed, rng=rng, dtype=dtype), LSTM(embed, hidden, rng=rng, dtype=dtype),
                         Linear(hidden, vocab_size, rng=rng, dtype=dtype), dtype=dtype)
        self.sizes = (int(vocab_size), int(embed), int(hidden))

    def config(self):
        return dict(zip(("vocab_size", "embed", "hidden"), self.sizes))

    def spec(self):
        """Rebuilds as this class (nets.load finds it once this module is imported), not a plain Sequential."""
        return {"type": type(self).__name__, "config": self.config()}

    def forward(self, ids, state=None):
        embed, lstm, linear = self.layers
        n, t = ids.shape
        hs = lstm.forward(embed.forward(ids), state)  # (N, T, H)
        return linear.forward(hs.reshape(n * t, -1)).reshape(n, t, -1)  # (N, T, V)

    def backward(self, dlogits):
        embed, lstm, linear = self.layers
        n, t, v = dlogits.shape
        dh = linear.backward(dlogits.reshape(n * t, v)).reshape(n, t, -1)  # (N, T, H)
        embed.backward(lstm.backward(dh))  # (N, T, E) into the embedding rows
        return None

    @property
    def final_state(self):
        return self.layers[1].final_state


def encode(text, chars):
    index = {c: i for i, c in enumerate(chars)}
    return np.array([index[c] for c in text], dtype=np.int64)


def streams(ids, n_streams, offset=0):
    """ids[offset:] cut into n_streams equal rows (N, L), the tail that does not fit dropped."""
    ids = ids[offset:]
    length = len(ids) // n_streams
    return ids[:n_streams * length].reshape(n_streams, length)


def evaluate(model, ids, n_streams=16, seq_len=200):
    """Mean cross-entropy (nats per character) of predicting each next character of ids."""
    data = streams(ids, max(1, min(n_streams, (len(ids) - 1) // 2)))  # (S, L), L >= 2
    loss_fn, state, total, count = SoftmaxCrossEntropy(), None, 0.0, 0
    for start in range(0, data.shape[1] - 1, seq_len):
        x = data[:, start:start + seq_len]  # (S, T)
        y = data[:, start + 1:start + seq_len + 1]  # (S, T') with T' = T except at the end
        logits = model.forward(x[:, :y.shape[1]], state)  # (S, T', V)
        state = model.final_state
        total += loss_fn.forward(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)) * y.size
        count += y.size
    return total / count


def train(cfg, log=None):
    """Train on the first 90%, score the last 10%; result dict adds model and chars (the vocabulary)."""
    start = time.perf_counter()
    text = load_text(cfg.text_path, data_dir=cfg.data_dir)
    chars = sorted(set(text))
    ids = encode(text, chars)
    n_val = int(round(cfg.held_out * len(ids)))
    if n_val < 2 or len(ids) - n_val < cfg.batch_size * (cfg.seq_len + 1):
        raise TaskError(f"shakespeare: {len(ids)} characters are too few for batch_size {cfg.batch_size} "
                         f"and seq_len {cfg.seq_len} with {cfg.held_out:.0%} held out")
    train_ids, val_ids = ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    if cfg.train_chars > 0:
        train_ids = train_ids[:max(cfg.train_chars, cfg.batch_size * (cfg.seq_len + 1))]
    if cfg.val_chars > 0:
        val_ids = val_ids[:cfg.val_chars]
    rng = np.random.default_rng(cfg.seed)
    model = CharLSTM(len(chars), cfg.embed, cfg.hidden, rng=rng)
    loss_fn, opt = SoftmaxCrossEntropy(), Adam(model, lr=cfg.lr)
    for epoch in range(1, cfg.epochs + 1):
        # A fresh offset each epoch moves the window edges, so no character is always first.
        data = streams(train_ids, cfg.batch_size, offset=int(rng.integers(cfg.seq_len)))  # (B, L)
        state, total, count = None, 0.0, 0
        for s in range(0, data.shape[1] - cfg.seq_len, cfg.seq_len):
            x, y = data[:, s:s + cfg.seq_len], data[:, s + 1:s + cfg.seq_len + 1]  # (B, T)
            logits = model.forward(x, state)  # (B, T, V)
            state = model.final_state  # carried on, but backward stops at this window's start
            loss = loss_fn.forward(logits.reshape(-1, len(chars)), y.reshape(-1))
            model.backward(loss_fn.backward().reshape(logits.shape))
            clip_grad_norm(model, cfg.clip)
            opt.step()
            total, count = total + loss, count + 1
        opt.lr *= cfg.lr_decay
        if log is not None:
            log({"task": "shakespeare", "epoch": epoch, "train_loss": total / max(count, 1),
                 "val_loss": evaluate(model, val_ids), "seconds": time.perf_counter() - start})
    val = evaluate(model, val_ids)
    return make_result("shakespeare", "validation nats/char", val, cfg.target, cfg.epochs,
                       time.perf_counter() - start, lower_is_better=True, model=model, chars=chars)


def sample(model, chars, length, temperature=1.0, prime=None, rng=None):
    """length characters drawn one at a time from softmax(logits / temperature), after reading prime
    (default a newline, or the first character of the vocabulary if the text has none)."""
    if prime is None:
        prime = "\n" if "\n" in chars else chars[0]
    if temperature <= 0:
        raise TaskError(f"temperature must be > 0, got {temperature}")
    unknown = sorted(set(prime) - set(chars))
    if unknown:
        raise TaskError(f"prime has characters outside the vocabulary: {''.join(unknown)!r}")
    rng = np.random.default_rng(rng)
    model.eval()
    logits = model.forward(encode(prime, chars)[None, :])  # (1, P, V)
    out = []
    for _ in range(length):
        probs = softmax(logits[0, -1].astype(np.float64) / temperature)  # (V,)
        nxt = int(rng.choice(len(chars), p=probs))
        out.append(chars[nxt])
        logits = model.forward(np.array([[nxt]]), model.final_state)  # (1, 1, V)
    model.train()
    return "".join(out)
