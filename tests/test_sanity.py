"""nets.tasks and scripts.sanity: small fast versions of each chapter (a lower bar), the composite models'
gradients, word-vector queries, sampling, and the command line's table, exit codes and one-line errors."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import nets
from nets.losses import SoftmaxCrossEntropy
from nets.tasks import TaskError, digits, sentiment, shakespeare
from scripts import sanity

from real_data import data_folder

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The quick chapters' bars, stated here and not read from nets/tasks (lowering a number there must not
# pass these tests). Each sits above what a trivial model reaches on the same held-out data and below
# what the quick run measured (fixed seeds, 2 cores):
#   MNIST, 2,000 test images: a linear softmax model reaches 90.05% trained on the CNN's 20,000 images,
#       90.7% on the MLP's 30,000 and 91.45% on all 60,000 (best epoch and learning rate); the quick
#       MLP measured 95.75%, the quick CNN 96.40%.
#   tiny Shakespeare, 20,000 validation characters: a bigram table (best add-k smoothing) 2.576 nats on
#       the same 300,000 training characters, 2.492 on the whole training text; the quick LSTM 2.169.
#   movie-review polarity, the fixed 1,066 held-out snippets: the commoner label 50.5%; the quick bag
#       of embeddings 75.8% (naive Bayes on the same snippets, not a trivial model, 78.0%).
QUICK_BARS = {"digits/mnist/mlp": 0.935, "digits/mnist/cnn": 0.94, "shakespeare": 2.30, "sentiment": 0.72}


# one BLAS thread for this module: see one_blas_thread in conftest.py
pytestmark = pytest.mark.usefixtures("one_blas_thread")


# ---- the chapters, small ---------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_digits_quick_beats_a_linear_model(model):
    epochs = []
    result = digits.train(digits.quick_config(model, data_dir=str(data_folder("mnist"))), log=epochs.append)
    bar = QUICK_BARS[f"digits/mnist/{model}"]
    assert result["value"] >= bar, f"{model}: test accuracy {result['value']:.4f} < {bar}"
    assert result["passed"] == (result["value"] >= result["target"])
    assert [m["epoch"] for m in epochs] == list(range(1, result["epochs"] + 1))
    assert result["task"] == f"digits/mnist/{model}" and result["seconds"] > 0


def test_shakespeare_quick_beats_a_bigram_table_and_samples():
    result = shakespeare.train(shakespeare.quick_config(data_dir=str(data_folder("shakespeare"))))
    bar = QUICK_BARS["shakespeare"]
    assert result["value"] <= bar and result["lower_is_better"], f"val {result['value']:.3f} > {bar}"
    text = shakespeare.sample(result["model"], result["chars"], 80, temperature=0.5, rng=1)
    assert len(text) == 80 and set(text) <= set(result["chars"])
    assert text == shakespeare.sample(result["model"], result["chars"], 80, temperature=0.5, rng=1)
    with pytest.raises(TaskError, match="temperature"):
        shakespeare.sample(result["model"], result["chars"], 5, temperature=0)


# ---- pieces that need no data ----------------------------------------------------------------------

def numeric_grad_check(model, forward_loss, rng, checks=12, eps=1e-6):
    """Compare model.grads after backward with central differences on a few entries of every parameter."""
    for name, p, g in model.parameters():
        for _ in range(checks):
            i = tuple(rng.integers(s) for s in p.shape)
            old = p[i]
            p[i] = old + eps
            up = forward_loss(backward=False)
            p[i] = old - eps
            down = forward_loss(backward=False)
            p[i] = old
            forward_loss(backward=True)
            assert g[i] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-7), f"{name}{i}"


def test_bag_of_embeddings_gradients_float64():
    rng = np.random.default_rng(0)
    model = sentiment.BagOfEmbeddings(12, 5, classes=3, rng=rng, dtype=np.float64)
    ids = np.array([[3, 4, 5, 0], [7, 7, 0, 0], [1, 2, 3, 11]])  # 0 is padding
    labels = np.array([0, 2, 1])
    loss_fn = SoftmaxCrossEntropy()

    def forward_loss(backward):
        loss = loss_fn.forward(model.forward(ids), labels)
        if backward:
            model.backward(loss_fn.backward())
        return loss

    numeric_grad_check(model, forward_loss, rng)
    forward_loss(backward=True)
    assert not model.layers[0].grads["W"][[0, 6, 8, 9, 10]].any(), "padding and absent words get no gradient"


def test_char_lstm_gradients_float64_through_a_carried_state():
    rng = np.random.default_rng(1)
    model = shakespeare.CharLSTM(7, 4, 6, rng=rng, dtype=np.float64)
    model.forward(rng.integers(7, size=(2, 3)))
    state = tuple(s.copy() for s in model.final_state)  # from an earlier window: a constant here
    ids, targets = rng.integers(7, size=(2, 5)), rng.integers(7, size=(2, 5))
    loss_fn = SoftmaxCrossEntropy()

    def forward_loss(backward):
        logits = model.forward(ids, state)  # (2, 5, 7)
        loss = loss_fn.forward(logits.reshape(-1, 7), targets.reshape(-1))
        if backward:
            model.backward(loss_fn.backward().reshape(logits.shape))
        return loss

    numeric_grad_check(model, forward_loss, rng)


def test_composite_models_save_and_load_as_themselves(tmp_path):
    rng = np.random.default_rng(3)
    ids = rng.integers(7, size=(2, 6))
    for model in (shakespeare.CharLSTM(7, 4, 6, rng=rng), sentiment.BagOfEmbeddings(7, 5, dropout=0.1, rng=rng)):
        nets.save(tmp_path / "model.npz", model.eval())
        back, _ = nets.load(tmp_path / "model.npz")
        assert type(back) is type(model) and back.config() == model.config()
        assert np.array_equal(back.eval().forward(ids), model.forward(ids))


def test_streams_cut_the_text_into_equal_rows():
    ids = np.arange(23)
    rows = shakespeare.streams(ids, 4, offset=2)
    assert rows.shape == (4, 5) and list(rows[1]) == [7, 8, 9, 10, 11]


def test_evaluate_matches_one_pass_over_the_whole_text():
    rng = np.random.default_rng(2)
    model = shakespeare.CharLSTM(5, 3, 4, rng=rng)
    ids = rng.integers(5, size=301)
    whole = SoftmaxCrossEntropy().forward(model.forward(ids[None, :-1]).reshape(-1, 5), ids[1:])
    assert shakespeare.evaluate(model, ids, n_streams=1, seq_len=37) == pytest.approx(whole, rel=1e-5)


def test_nearest_and_analogy_on_known_vectors():
    vocab = [sentiment.PAD, sentiment.UNK, "king", "queen", "man", "woman", "apple"]
    vectors = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 0], [1, -1, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1.0]])
    assert sentiment.analogy(vectors, vocab, "king", "man", "woman", k=1)[0][0] == "queen"
    near = sentiment.nearest(vectors, vocab, "king", k=3)
    assert {w for w, _ in near[:2]} == {"man", "queen"} and near[2] == ("apple", 0.0)
    assert all(a[1] >= b[1] for a, b in zip(near, near[1:]))
    assert {w for w, _ in sentiment.nearest(vectors, vocab, "king", k=3, among=5)} == {"man", "queen"}
    with pytest.raises(TaskError, match="'prince' is not in the vocabulary"):
        sentiment.nearest(vectors, vocab, "prince")


def test_held_out_split_is_fixed_and_disjoint():
    texts = [f"snippet {i}" for i in range(100)]
    labels = np.arange(100) % 2
    (a, _), (b, lb) = sentiment.split(texts, labels, 0.1, seed=1234)
    (_, _), (b2, _) = sentiment.split(texts, labels, 0.1, seed=1234)
    assert len(b) == 10 and b == b2 and not set(a) & set(b)
    assert list(lb) == [int(t.split()[1]) % 2 for t in b]


def test_tokens_and_encoding():
    assert sentiment.tokens("not good at all", bigrams=True)[-3:] == ["not_good", "good_at", "at_all"]
    vocab = sentiment.build_vocab(["a b a", "b c"], min_count=2)
    assert vocab == [sentiment.PAD, sentiment.UNK, "a", "b"]
    ids, lengths = sentiment.encode(["a c b", ""], vocab)
    assert ids.tolist() == [[2, 1, 3], [1, 0, 0]] and lengths.tolist() == [3, 1]


def test_unknown_model_or_dataset_is_a_task_error():
    with pytest.raises(TaskError, match="digits: model must be one of"):
        digits.full_config("rnn")
    with pytest.raises(TaskError, match="dataset one of"):
        digits.train(digits.DigitsConfig(dataset="cifar"))


# ---- the command line ------------------------------------------------------------------------------

def canned(task, value, target, passed, lower=False):
    def train(cfg, log=None):
        if log:
            log({"task": task, "epoch": 1, "train_loss": 0.5, "seconds": 0.1})
        return {"task": task, "metric": "validation nats/char" if lower else "test accuracy", "value": value,
                "target": target, "lower_is_better": lower, "passed": passed, "epochs": 1, "seconds": 0.1,
                "model": None, "chars": list("ab"), "vocab": [], "vectors": None}
    return train


@pytest.fixture
def any_data(monkeypatch):
    """The canned tasks below need no data."""
    for module in (digits, sentiment, shakespeare):
        monkeypatch.setattr(module, "check_data", lambda cfg: None)


def test_all_tasks_print_one_table_and_exit_1_on_a_miss(monkeypatch, capsys, any_data):
    monkeypatch.setattr(digits, "train", canned("digits/mnist/mlp", 0.985, 0.98, True))
    monkeypatch.setattr(sentiment, "train", canned("sentiment", 0.77, 0.76, True))
    monkeypatch.setattr(shakespeare, "train", canned("shakespeare", 1.55, 1.60, True, lower=True))
    assert sanity.main(["--quiet"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("task "):].splitlines()
    assert table[0].split()[:6] == ["task", "metric", "target", "reached", "epochs", "seconds"]
    assert len(table) == 5 and all(line.endswith("ok") for line in table[1:])
    assert ">= 98.00%" in out and "98.50%" in out and "<= 1.600" in out and "1.550" in out
    monkeypatch.setattr(shakespeare, "train", canned("shakespeare", 1.75, 1.60, False, lower=True))
    assert sanity.main(["--quiet"]) == 1
    assert "MISSED" in capsys.readouterr().out


def test_flags_reach_the_configs_before_or_after_the_task(monkeypatch, capsys, any_data):
    seen = []
    monkeypatch.setattr(digits, "train", lambda cfg, log=None: seen.append(cfg) or canned("d", 0.99, 0.98, True)(cfg))
    assert sanity.main(["--epochs", "3", "digits", "--model", "cnn", "--seed", "7", "--data-dir", "/x"]) == 0
    assert [(c.model, c.dataset, c.epochs, c.seed, c.data_dir, c.target) for c in seen] == [("cnn", "mnist", 3, 7, "/x", 0.99)]
    seen.clear()
    assert sanity.main(["digits", "--dataset", "fashion", "--quick"]) == 0
    assert [(c.model, c.dataset, c.train_size > 0) for c in seen] == [("mlp", "fashion", True), ("cnn", "fashion", True)]
    capsys.readouterr()


def test_sentiment_command_quick_beats_the_commoner_label_with_word_queries(capsys):
    code = sanity.main(["sentiment", "--quick", "--quiet", "--data-dir", str(data_folder("polarity")),
                        "--similar", "good", "--analogy", "king", "man", "woman"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "nearest to 'good': " in out and out.count("(") >= 15
    assert "king - man + woman: " in out
    row = out.rstrip().splitlines()[-1].split()  # sentiment held-out accuracy >= 72.00% 75.80% 3 2 ok
    assert row[0] == "sentiment" and row[-1] == "ok"
    reached = float(row[5].rstrip("%")) / 100
    assert reached >= QUICK_BARS["sentiment"], out


def test_unknown_word_fails_before_training(capsys):
    with pytest.raises(SystemExit) as e:
        sanity.main(["sentiment", "--quick", "--data-dir", str(data_folder("polarity")), "--similar", "qwzxv"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "qwzxv" in err


@pytest.mark.parametrize("argv, words", [
    (["digits", "--model", "rnn"], "invalid choice"),
    (["shakespeare", "--temperature", "0"], "must be > 0"),
    (["shakespeare", "--sample-chars", "-3"], "must be >= 0"),
    (["sentiment", "--analogy", "king", "man"], "expected 3 arguments"),
    (["chess"], "invalid choice"),
    (["--blas-threads", "0"], "must be >= 1"),
])
def test_bad_flags_are_one_line_with_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        sanity.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


def test_shakespeare_command_on_any_text_file(tmp_path, capsys):
    path = tmp_path / "song.txt"
    path.write_text("la la lé, do re mi\n" * 400, encoding="utf-8")  # 8,000 characters
    code = sanity.main(["shakespeare", "--quick", "--text", str(path), "--sample-chars", "30", "--temperature", "0.5"])
    out = capsys.readouterr().out
    assert code == 0, out
    sample = out.split("--- sample at temperature 0.5 ---\n")[1].split("\n---")[0]
    assert len(sample) == 30 and set(sample) <= set("la é,doremi\n")
    path.write_text("too short")
    with pytest.raises(SystemExit) as e:
        sanity.main(["shakespeare", "--quick", "--text", str(path)])
    assert e.value.code == 2 and "too few" in capsys.readouterr().err


def test_missing_data_stops_the_run_before_any_training(tmp_path, monkeypatch, capsys):
    DATA = data_folder("mnist", "polarity")
    (tmp_path / "shakespeare").mkdir()
    (tmp_path / "shakespeare" / "input.txt").write_text("damaged\n")
    for name in ("mnist", "sentiment"):
        os.symlink(DATA / name, tmp_path / name)
    monkeypatch.setattr(digits, "train", lambda cfg, log=None: pytest.fail("trained before checking all the data"))
    with pytest.raises(SystemExit) as e:
        sanity.main(["--data-dir", str(tmp_path)])
    assert e.value.code == 2 and "tiny Shakespeare" in capsys.readouterr().err


def test_missing_data_is_one_line_exit_2_without_traceback(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), GROK_ARCADE_DATA="",
               # any download attempt goes to a closed local port: refused at once, never the network
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", no_proxy="")
    proc = subprocess.run([sys.executable, "-m", "scripts.sanity", "shakespeare", "--data-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "input.txt" in proc.stderr and str(tmp_path / "shakespeare") in proc.stderr
    assert not (tmp_path / ".cache" / "grok-arcade" / "shakespeare" / "input.txt").exists()
