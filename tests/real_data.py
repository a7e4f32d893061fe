"""Where the tests find the real data sets (MNIST, Fashion-MNIST, tiny Shakespeare, movie-review polarity).

A test that needs them calls data_folder("mnist", ...) first. The folder is $GROK_ARCADE_DATA when it is
set, else the first of ../shared/data beside the checkout and the loaders' download cache
(~/.cache/grok-arcade) that holds every file asked for, laid out as nets/data.py says.

Missing files FAIL the test where the data was promised: GROK_ARCADE_DATA is set, or CI runs (CI is set,
as on every CI service). Anywhere else the test is skipped, with a message saying how to get the data.
"""
import os
import pathlib

import pytest

from nets import data

ROOT = pathlib.Path(__file__).resolve().parents[1]
CANDIDATES = (ROOT.parent / "shared" / "data", data.DEFAULT_CACHE)


def missing_files(folder, keys):
    """The files of data sets `keys` that are not in folder/<data set folder>/."""
    return [f"{data.DATASETS[key].folder}/{name}" for key in keys for name, _ in data.DATASETS[key].files
            if not (folder / data.DATASETS[key].folder / name).is_file()]


def data_folder(*keys, environ=None):
    """The folder holding every file of data sets `keys` ("mnist", "fashion", "shakespeare", "polarity");
    else pytest.fail where the data was promised, pytest.skip elsewhere (see the module docstring)."""
    environ = os.environ if environ is None else environ
    promised = environ.get(data.DATA_ENV)
    folders = [pathlib.Path(promised).expanduser()] if promised else list(CANDIDATES)
    for folder in folders:
        if not missing_files(folder, keys):
            return folder
    missing = missing_files(folders[0], keys)
    titles = ", ".join(data.DATASETS[key].title for key in keys)
    if promised or environ.get("CI"):
        why = f"{data.DATA_ENV}={promised}" if promised else "CI is set"
        pytest.fail(f"{why}, so the real-data tests must run, but {folders[0]} lacks {', '.join(missing)}",
                    pytrace=False)
    pytest.skip(f"needs {titles}, not found in {' or '.join(map(str, folders))}: set {data.DATA_ENV} to a folder "
                f"holding {', '.join(missing)}, or let `python -m scripts.sanity --quick` download every data set into "
                f"{data.DEFAULT_CACHE} (nets/data.py lists the sources and checksums)")
