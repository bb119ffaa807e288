import contextlib
import io
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SITE = PROJECT / "tests" / "subprocess_site"  # sitecustomize for the processes the tests start
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(SITE))

import no_network  # noqa: E402

# A proxy on this machine would be a local address the guard lets through.
PROXY_VARIABLES = [f"{name}_proxy" for name in ("http", "https", "ftp", "all", "no")]
PROXY_VARIABLES += [name.upper() for name in PROXY_VARIABLES]
# Every folder the code or its libraries read or write outside a run's --work_dir.
HERMETIC_FOLDERS = {"HOME": "home", "TORCH_HOME": "torch_home", "XDG_CACHE_HOME": "cache", "DIAM_CACHE": "diam_cache",
                    "DIAM_DATA_ROOT": "data", "DIAM_OFA_CACHE": "ofa_cache", "DIAM_WORK_DIR": "runs",
                    "MPLCONFIGDIR": "matplotlib"}


@pytest.fixture(scope="session", autouse=True)
def hermetic(tmp_path_factory):
    """Tests read and write only temporary folders, and nothing they start can download.

    The guard works in this process and, through PYTHONPATH (a sitecustomize), in every
    Python process the tests start: downloads fail at once with no_network.MESSAGE, so
    the tests behave the same with or without a network.
    """
    root = tmp_path_factory.mktemp("hermetic")
    with pytest.MonkeyPatch.context() as mp:
        for name in PROXY_VARIABLES:
            mp.delenv(name, raising=False)
        for name, folder in HERMETIC_FOLDERS.items():
            (root / folder).mkdir()
            mp.setenv(name, str(root / folder))
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")])))
        mp.chdir(root)  # OFA weights are also looked for in ./.torch
        no_network.install(mp.setattr)
        yield root


def run_script(script, *args, cwd, env=None):
    """Run a top-level script the way a user does; returns the CompletedProcess."""
    env = dict(env or {})
    if "PYTHONPATH" in env:  # the caller's folders first, the network guard kept
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], os.environ["PYTHONPATH"]])
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, str(PROJECT / script), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


def run_script_here(script, *args):
    """Run a top-level script in this process, as `python script args` would (saves starting torch
    again): a CompletedProcess with the exit code and what it printed."""
    argv, out, err = [str(PROJECT / script), *map(str, args)], io.StringIO(), io.StringIO()
    saved_argv, code = sys.argv, 0
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def folder_state(*folders) -> dict:
    """Every file (with its bytes) and folder under `folders`, hidden ones included."""
    state = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            state[str(path)] = path.read_bytes() if path.is_file() else "folder"
    return state


def linked_copy(source, destination):
    """A copy of a run folder whose files are hard links: cheap, and safe because every step
    replaces a file by renaming a new one over it, never by writing into it."""
    shutil.copytree(source, destination, copy_function=os.link)
    return destination


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh folder for runs, data and weight caches, and the current directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DIAM_WORK_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DIAM_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("DIAM_OFA_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_clean_error(result, *fragments):
    """A user error: exit code 2, one paragraph naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
