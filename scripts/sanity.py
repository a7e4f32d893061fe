"""Prove the numpy stack on the book's supervised chapters: python -m scripts.sanity [TASK] [flags].

    python -m scripts.sanity digits [--dataset fashion] [--model mlp|cnn|both]
    python -m scripts.sanity sentiment [--similar WORD] [--analogy king man woman]
    python -m scripts.sanity shakespeare [--temperature T] [--sample-chars N] [--text FILE]
    python -m scripts.sanity                  every task (MNIST MLP and CNN, sentiment, Shakespeare)

Prints a table (task, metric, target, reached, epochs, seconds) and exits 1 when a target is missed.
--quick runs the small versions the tests use (a data subset, an epoch or two, a lower bar).
"""
import argparse
import sys

from nets.data import DataError
from nets.tasks import TaskError, digits, sentiment, shakespeare
from scripts.common import (Parser, UsageError, at_least_one, blas_threads, bounded, fail, positive_float,
                            seed_value, whole_number)

QUERY_WORDS = 3000  # --similar and --analogy answer from the most frequent words only


count = bounded(whole_number, lambda v: v >= 0, "must be >= 0")


def shared_flags(defaults):
    """Flags accepted before or after the task name. Each parser gets its own copy: the subcommands'
    copies default to SUPPRESS so they never reset a value given before the task name."""
    def default(value):
        return value if defaults else argparse.SUPPRESS
    shared = Parser(add_help=False)
    shared.add_argument("--data-dir", default=default(None),
                        help="folder with mnist/, fashion-mnist/, shakespeare/, sentiment/ (default $GROK_ARCADE_DATA)")
    shared.add_argument("--quick", action="store_true", default=default(False),
                        help="small fast versions with a lower bar (what the tests run)")
    shared.add_argument("--epochs", type=at_least_one, default=default(None), help="override each task's epochs")
    shared.add_argument("--seed", type=seed_value, default=default(None), help="training seed (default 0)")
    shared.add_argument("--blas-threads", type=count, default=default(None),
                        help="OpenBLAS threads (default 1: more threads than free cores wait on each other's "
                             "time slices)")
    shared.add_argument("--quiet", action="store_true", default=default(False), help="no per-epoch lines")
    return shared


def build_parser():
    p = Parser(prog="python -m scripts.sanity", parents=[shared_flags(True)], description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(task=None)
    shared = shared_flags(False)
    sub = p.add_subparsers(dest="task", parser_class=Parser, metavar="TASK")
    d = sub.add_parser("digits", parents=[shared], help="MNIST / Fashion-MNIST: MLP and CNN")
    d.add_argument("--dataset", choices=("mnist", "fashion"), default="mnist")
    d.add_argument("--model", choices=("mlp", "cnn", "both"), default="both")
    s = sub.add_parser("sentiment", parents=[shared], help="movie-review polarity: bag of embeddings")
    s.add_argument("--similar", metavar="WORD", help="print the words nearest WORD by cosine similarity")
    s.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="print the top five for A - B + C")
    t = sub.add_parser("shakespeare", parents=[shared], help="tiny Shakespeare: character LSTM")
    t.add_argument("--temperature", type=positive_float, default=0.8, help="sampling temperature (default 0.8)")
    t.add_argument("--sample-chars", type=count, default=500, help="characters to sample (default 500)")
    t.add_argument("--text", metavar="FILE", help="train on this UTF-8 text file instead of tiny Shakespeare")
    return p


def task_configs(args):
    """[(task module, config)] for what the command line asks."""
    common = {"data_dir": args.data_dir}
    if args.epochs is not None:
        common["epochs"] = args.epochs
    if args.seed is not None:
        common["seed"] = args.seed
    preset = "quick_config" if args.quick else "full_config"
    out = []
    if args.task in (None, "digits"):
        dataset = getattr(args, "dataset", "mnist")
        models = ("mlp", "cnn") if getattr(args, "model", "both") == "both" else (args.model,)
        out += [(digits, getattr(digits, preset)(m, dataset, **common)) for m in models]
    if args.task in (None, "sentiment"):
        out.append((sentiment, getattr(sentiment, preset)(**common)))
    if args.task in (None, "shakespeare"):
        text = getattr(args, "text", None)
        out.append((shakespeare, getattr(shakespeare, preset)(text_path=text, **common)))
    return out


def check_words(args, module, cfg):
    """Fail before training when a --similar / --analogy word will not be in the vocabulary."""
    words = ([args.similar] if args.similar else []) + list(args.analogy or [])
    if words:
        vocab = set(module.vocabulary(cfg))
        missing = [w for w in words if w not in vocab]
        if missing:
            raise UsageError(f"not in the sentiment vocabulary: {', '.join(missing)}")


def format_value(result, value):
    return f"{100 * value:.2f}%" if "accuracy" in result["metric"] else f"{value:.3f}"


def print_epoch(m):
    extra = "".join(f", {k.replace('_', ' ')} {v:.4f}" for k, v in m.items() if k.endswith(("loss", "accuracy")))
    print(f"  {m['task']} epoch {m['epoch']}{extra} ({m['seconds']:.0f}s)", flush=True)


def print_extras(args, result):
    similar, analogy = getattr(args, "similar", None), getattr(args, "analogy", None)
    if result["task"] == "sentiment":
        vectors, vocab = result["vectors"], result["vocab"]
        if similar:
            pairs = sentiment.nearest(vectors, vocab, similar, k=10, among=QUERY_WORDS)
            print(f"nearest to {similar!r}: " + ", ".join(f"{w} ({s:.2f})" for w, s in pairs))
        if analogy:
            a, b, c = analogy
            pairs = sentiment.analogy(vectors, vocab, a, b, c, k=5, among=QUERY_WORDS)
            print(f"{a} - {b} + {c}: " + ", ".join(f"{w} ({s:.2f})" for w, s in pairs))
    elif result["task"] == "shakespeare" and getattr(args, "sample_chars", 0) > 0:
        text = shakespeare.sample(result["model"], result["chars"], args.sample_chars, args.temperature, rng=0)
        print(f"--- sample at temperature {args.temperature:g} ---\n{text}\n---")


def print_table(results):
    rows = [("task", "metric", "target", "reached", "epochs", "seconds", "")]
    for r in results:
        sign = "<=" if r["lower_is_better"] else ">="
        rows.append((r["task"], r["metric"], f"{sign} {format_value(r, r['target'])}", format_value(r, r["value"]),
                     str(r["epochs"]), f"{r['seconds']:.0f}", "ok" if r["passed"] else "MISSED"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def run(args):
    try:
        configs = task_configs(args)
        for module, cfg in configs:  # every data set and word checked before an hour of training
            module.check_data(cfg)
            if args.task == "sentiment":
                check_words(args, module, cfg)
        results = []
        for module, cfg in configs:
            result = module.train(cfg, log=None if args.quiet else print_epoch)
            print(f"{result['task']}: {result['metric']} {format_value(result, result['value'])} after "
                  f"{result['epochs']} epochs in {result['seconds']:.0f}s", flush=True)
            print_extras(args, result)
            results.append(result)
    except (DataError, TaskError) as e:
        raise UsageError(str(e).splitlines()[0]) from None
    print_table(results)
    return 0 if all(r["passed"] for r in results) else 1


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        with blas_threads(args.blas_threads, default=1):
            return run(args)
    except UsageError as e:
        fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
