import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))


def run_script(script, *args, cwd, env=None):
    """Run a top-level script the way a user does; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    # Any download attempt fails at once instead of depending on the network.
    full_env.update({"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                     "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"})
    full_env.setdefault("HOME", str(cwd))
    return subprocess.run([sys.executable, str(PROJECT / script), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh folder for runs, data and weight caches."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DIAM_WORK_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DIAM_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("DIAM_OFA_CACHE", raising=False)
    return tmp_path


def assert_clean_error(result, *fragments):
    """A user error: non-zero exit, one paragraph naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
