"""Reliability: interrupted loops resume to the same result, loops share a folder safely,
bad inputs give one clear error and change nothing, full disks and pickled code are refused.

Every loop here runs at a tiny size (TINY) with one thread per process, so runs are
bit-for-bit reproducible and the whole file stays near two minutes on two cores.
"""
import errno
import io
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from filelock import FileLock

from conftest import PROJECT, assert_clean_error, folder_state, run_script_here
from diam import models
from diam.errors import UserError
from diam.paths import atomic_write, write_indices, write_npz, write_text
from diam.results import load_results

TINY = ["--al_iters", "2", "--epochs", "2", "--pool_size", "400", "--test_size", "200",
        "--initial_labeled", "60", "--query_batch", "20"]
POOL = 400
LEAN = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ------------------------------------------------------------------ helpers
class _MakeDir:
    """A pickled payload: unpickling it runs os.mkdir(marker). Safe loaders must refuse it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _env(home, extra=None):
    return {**os.environ, **LEAN, "HOME": str(home), "DIAM_DATA_ROOT": str(home / "data"),
            **(extra or {})}


@pytest.fixture
def spawned():
    """Process groups started by a test; any still alive at teardown are killed."""
    groups = []
    yield groups
    for proc in groups:
        if proc.poll() is None or _group_alive(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _interruptible():
    """Ctrl-C behaves as in a terminal: a shell started in the background (as CI may start the
    test suite) inherits SIGINT ignored, and bash can then neither trap nor receive it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def start_loop(home, model_num, spawned, tag="", env=None):
    """`bash iter_all.sh cpu T` in its own process group, output to log files in `home`."""
    out_log, err_log = home / f"loop-T{model_num}{tag}.out", home / f"loop-T{model_num}{tag}.err"
    env = _env(home, {"PYTHON": sys.executable, "PRESET": "quick", "DATASETS": "digits", "METHODS": "DIAM",
                      "DIAM_WORK_DIR": str(home / "runs"), "EXTRA_ARGS": " ".join(TINY), **(env or {})})
    with open(out_log, "w") as out, open(err_log, "w") as err:
        proc = subprocess.Popen(["bash", str(PROJECT / "iter_all.sh"), "cpu", str(model_num)], cwd=home, env=env,
                                stdout=out, stderr=err, start_new_session=True, preexec_fn=_interruptible)
    proc.logs = (out_log, err_log)
    spawned.append(proc)
    return proc


def logs(proc) -> str:
    return "".join(f"--- {p.name}\n{p.read_text()}" for p in proc.logs)


def _group_members(pgid):
    """(pid, cmdline, cpu ticks) of the live (non-zombie) processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((int(stat.parent.name), cmdline, int(fields[11]) + int(fields[12])))
    return members


def _group_alive(pgid) -> bool:
    return bool(_group_members(pgid))


def stop(proc, sig):
    """Send `sig` to the loop's whole process group and wait until every member is gone."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid):
            assert time.monotonic() < deadline, f"processes of the loop outlived {sig!r}"
            time.sleep(0.05)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the loop did not stop on {sig!r}:\n{logs(proc)}")
    assert proc.returncode != 0, f"the loop finished although it was sent {sig!r}:\n{logs(proc)}"


def finish(proc, timeout=600):
    assert proc.wait(timeout=timeout) == 0, logs(proc)


def outputs(runs: Path) -> dict:
    """What a finished loop leaves that must not depend on how it got there, by relative path:
    index files and pool records (arrays), checkpoints (tensors), performances.txt (text)."""
    found = {}
    for path in sorted(runs.rglob("*")):
        rel = path.relative_to(runs).as_posix()
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".npz":
            with np.load(path) as z:
                found[rel] = {k: z[k] for k in z.files}
        elif path.suffix == ".pt":
            found[rel] = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        elif path.name == "performances.txt":
            found[rel] = path.read_text()
    return found


def assert_same_outputs(got: dict, want: dict):
    missing = sorted(set(want) - set(got))
    assert not missing, f"missing outputs: {missing}"
    for rel, expected in want.items():
        value = got[rel]
        if isinstance(expected, str):
            assert value == expected, f"{rel} differs:\n{value}\nvs the clean run's\n{expected}"
        else:
            assert sorted(value) == sorted(expected), f"{rel} holds other entries"
            for key in expected:
                a, b = value[key], expected[key]
                same = torch.equal(a, b) if isinstance(b, torch.Tensor) else np.array_equal(a, b)
                assert same, f"{rel}[{key}] differs from the clean run"


def temp_files(folder: Path):
    return sorted(folder.rglob(".*.tmp"))


def common(work, model_num=2):
    return ["--dataset", "digits", "--model_num", model_num, "--preset", "quick", *TINY, "--device", "cpu",
            "--work_dir", work / "runs"]


# ------------------------------------------------------------------ the clean reference
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`bash iter_all.sh cpu 2` run once without interruption: its folder and its outputs."""
    home = tmp_path_factory.mktemp("clean")
    groups = []
    proc = start_loop(home, 2, groups)
    try:
        finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    runs = home / "runs"
    found = outputs(runs)
    for rel in ("quick/digits/indices/iter0.npz", "quick/digits/indices/T2/DIAM/iter1.npz",
                "quick/extracted_results/2/digits/DIAM/0/performances.txt",
                "quick/extracted_results/2/digits/DIAM/1/performances.txt",
                "quick/digits/models/T2/DIAM/iter1/net1.pt"):
        assert rel in found, f"the clean run left no {rel}"
    assert temp_files(runs) == []  # an uninterrupted run leaves no temporary file behind
    return runs, found


# ------------------------------------------------------------------ 1. resume exactly
RUNS_QUICK = "runs/quick"


class Pause(NamedTuple):
    """Kill inside a step: its process pauses when it opens `opened` (tests/subprocess_site/pause_on_open.py)
    before writing `output`."""
    script: str
    opened: str
    output: str


KILLS = [  # (signal, a file under runs/quick whose appearance triggers it, or a Pause inside a step)
    (signal.SIGKILL, "digits/models/iter0/net0_pool.npz"),  # net 0 half saved: its checkpoint not yet written
    (signal.SIGTERM, "digits/models/iter0/net0.pt"),  # net 1 of iteration 0 starting to train
    # testing: net 0 evaluated, net 1 being loaded
    (signal.SIGTERM, Pause("test_multi_models.py", "digits/models/iter0/net1.pt",
                           "extracted_results/2/digits/DIAM/0/performances.txt")),
    (signal.SIGINT, "extracted_results/2/digits/DIAM/0/performances.txt"),  # between testing and selecting
    # selecting: the next index file locked, net 0's snapshots read, net 1's being read
    (signal.SIGKILL, Pause("al_select.py", "digits/models/iter0/net1_pool.npz", "digits/indices/T2/DIAM/iter1.npz")),
    (signal.SIGKILL, "digits/models/T2/DIAM/iter1/net0.pt"),  # net 1 of iteration 1 starting to train
]


def _wait_for(path: Path, proc):
    deadline = time.monotonic() + 300
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the loop ended (rc {proc.returncode}) before {path} appeared:\n{logs(proc)}")
        assert time.monotonic() < deadline, f"{path} did not appear:\n{logs(proc)}"
        time.sleep(0.02)


def test_loop_killed_at_several_points_resumes_to_exactly_the_clean_result(reference, tmp_path, spawned):
    ref_runs, ref_outputs = reference
    base = tmp_path / RUNS_QUICK
    for n, (sig, trigger) in enumerate(KILLS):
        tag = f"-{n}-{sig.name}"
        if isinstance(trigger, Pause):
            paused = tmp_path / f"paused{tag}"
            # The step has not yet run to its end, so the kill lands inside it.
            assert not (base / trigger.output).exists(), f"kill {n}: {trigger.output} exists before the step ran"
            proc = start_loop(tmp_path, 2, spawned, tag=tag, env={
                "PAUSE_SCRIPT": trigger.script, "PAUSE_ON_OPEN": trigger.opened, "PAUSE_MARKER": str(paused)})
            _wait_for(paused, proc)
            stop(proc, sig)
            assert not (base / trigger.output).exists(), f"kill {n} came after {trigger.script} wrote its output"
        else:
            # Absent when the wait starts, so its appearance is this run's doing, at the expected moment.
            assert not (base / trigger).exists(), f"kill {n}: {trigger} exists before the run that should write it"
            proc = start_loop(tmp_path, 2, spawned, tag=tag)
            _wait_for(base / trigger, proc)
            stop(proc, sig)
    assert not (base / "extracted_results/2/digits/DIAM/1/performances.txt").exists(), "the kills came too late"

    # What a kill during a write leaves: temp files beside the outputs still to be written.
    stale = [base / "digits/models/T2/DIAM/iter1/.net1.pt.x1y2z3.tmp",
             base / "extracted_results/2/digits/DIAM/1/.performances.txt.x1y2z3.tmp",
             base / "extracted_results/2/digits/DIAM/1/.models.json.x1y2z3.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half-written \x00\xff")
    final = start_loop(tmp_path, 2, spawned, tag="-final")
    finish(final)

    assert_same_outputs(outputs(tmp_path / "runs"), ref_outputs)
    # Left-over temp files (planted, or left by a kill) are never read: results read as the clean run's.
    got, want = load_results(base / "extracted_results"), load_results(ref_runs / "quick/extracted_results")
    assert got.skipped == [] and sorted(got.accuracies) == sorted(want.accuracies)
    for key, per_iter in want.accuracies.items():
        assert sorted(got.accuracies[key]) == sorted(per_iter)
        for i in per_iter:
            np.testing.assert_array_equal(got.accuracies[key][i], per_iter[i])


STEP_THAT_SWALLOWS_CTRL_C = """#!/bin/bash
# Stands in for python: the preset has 2 iterations (the plan: last iteration 1, DATASETS and METHODS
# as given); a step logs itself and then, as a Python step does when Ctrl-C lands while it is
# exiting, ignores the interrupt and exits 0.
if [ "$1" = "-c" ]; then printf '1\\n%s\\n%s\\n' "$DATASETS" "$METHODS"; exit 0; fi
echo "$*" >> "$STEPS_LOG"
trap '' INT
touch "$STARTED"
sleep 1
"""


def test_ctrl_c_stops_the_loop_even_when_the_running_step_swallows_it(tmp_path, spawned):
    stub = tmp_path / "python-stub"
    stub.write_text(STEP_THAT_SWALLOWS_CTRL_C)
    stub.chmod(0o755)
    steps, started = tmp_path / "steps.log", tmp_path / "started"
    proc = start_loop(tmp_path, 1, spawned, env={"PYTHON": str(stub), "STEPS_LOG": str(steps),
                                                 "STARTED": str(started)})
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, logs(proc)
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130, logs(proc)
    assert "interrupted" in proc.logs[1].read_text()
    ran = steps.read_text().splitlines()
    assert len(ran) == 1 and ran[0].startswith("train_net.py"), ran  # no step after the interrupt


def test_parallel_training_stops_on_ctrl_c_and_resumes_to_the_sequential_result(reference, tmp_path, spawned):
    _, ref_outputs = reference
    proc = start_loop(tmp_path, 2, spawned, env={"PARALLEL": "2"})
    deadline = time.monotonic() + 120
    # Both nets of iteration 0 train at once, one process each...
    while len([m for m in _group_members(proc.pid) if "train_net.py" in m[1]]) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, \
            f"two train_net.py processes never ran at once:\n{logs(proc)}"
        time.sleep(0.02)
    # ...and Ctrl-C stops them too, although background processes of a script ignore it.
    stop(proc, signal.SIGINT)
    assert proc.returncode == 130, logs(proc)
    iter0 = tmp_path / RUNS_QUICK / "digits/models/iter0"
    assert not (iter0 / "net1.pt").exists(), "the interrupt came too late"
    unfinished = [n for n in (0, 1) if not (iter0 / f"net{n}.pt").exists()]

    # Iteration 0 only (the later ones train the same way) keeps the suite short.
    final = start_loop(tmp_path, 2, spawned, tag="-final", env={"PARALLEL": "2", "ITERS": "0"})
    finish(final)
    out = final.logs[0].read_text()
    # The resumed run trains exactly the nets the interrupt stopped, each once.
    trained = re.findall(rf"^net (\d+) trained on .*: {re.escape(str(iter0))}/net\1\.pt$", out, re.M)
    assert sorted(map(int, trained)) == unfinished, out
    # Every net is seeded by itself: the same files, bit for bit, as one process training both.
    got = outputs(tmp_path / "runs")
    assert {"quick/digits/models/iter0/net0.pt", "quick/digits/models/iter0/net1.pt",
            "quick/extracted_results/2/digits/DIAM/0/performances.txt"} <= set(got) <= set(ref_outputs)
    assert_same_outputs(got, {rel: ref_outputs[rel] for rel in got})


# ------------------------------------------------------------------ 2. two loops, one folder
def _wait_until_both_wait(procs, timeout=120):
    """Until each loop has a train_net.py process that has used no CPU for a second (waiting on a lock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a loop ended while iteration 0 was held:\n{logs(proc)}")
        before = [[m for m in _group_members(p.pid) if "train_net.py" in m[1]] for p in procs]
        time.sleep(1.0)
        after = [{pid: ticks for pid, cmd, ticks in _group_members(p.pid) if "train_net.py" in cmd} for p in procs]
        if all(b and all(after[i].get(pid, 1 << 60) - ticks <= 5 for pid, _, ticks in b)
               for i, b in enumerate(before)):
            return
    pytest.fail("the two loops never both waited for net 0 of iteration 0:\n" + "".join(logs(p) for p in procs))


def test_two_loops_with_different_T_in_one_folder_share_iteration_0(reference, tmp_path, spawned):
    _, ref_outputs = reference
    base = tmp_path / RUNS_QUICK
    net0 = base / "digits/models/iter0/net0.pt"
    net0.parent.mkdir(parents=True)
    # Hold net 0's lock until both loops wait for it, so that they really meet there.
    held = FileLock(str(net0) + ".lock")
    held.acquire()
    try:
        # T=1 runs iteration 0 only: the iterations after it live in folders of their own.
        loops = [start_loop(tmp_path, 1, spawned, env={"ITERS": "0"}), start_loop(tmp_path, 2, spawned)]
        _wait_until_both_wait(loops)
    finally:
        held.release()
    for proc in loops:
        finish(proc)

    out = {t: p.logs[0].read_text() for t, p in zip((1, 2), loops)}
    trained = {net_id: re.compile(rf"^net {net_id} trained on .*: {re.escape(str(net0.parent))}/net{net_id}\.pt$",
                                  re.M) for net_id in (0, 1)}
    for net_id in (0, 1):
        assert sum(len(trained[net_id].findall(o)) for o in out.values()) == 1, out
    trainer = 1 if trained[0].search(out[1]) else 2
    assert re.search(rf"^(net 0 already trained|already done): {re.escape(str(net0))}$", out[3 - trainer], re.M)

    # The T=2 loop ends exactly as a loop alone in its folder; the T=1 loop tested the same net 0.
    assert_same_outputs(outputs(tmp_path / "runs"), ref_outputs)
    results = base / "extracted_results"
    assert np.loadtxt(results / "1/digits/DIAM/0/performances.txt", ndmin=2).shape == (1, 2)
    assert (results / "1/digits/DIAM/0/performances.txt").read_text().splitlines()[0] == \
        (results / "2/digits/DIAM/0/performances.txt").read_text().splitlines()[0]
    assert temp_files(tmp_path / "runs") == []


# ------------------------------------------------------------------ 3. bad input: exit code 2, nothing written
def _valid_split():
    return np.arange(60), np.arange(60, POOL)


def _copy_iteration_0(ref_runs, work):
    """A run folder holding the clean run's settings, initial split and iteration-0 nets."""
    for rel in ("quick/digits/config.json", "quick/digits/indices/iter0.npz"):
        (work / "runs" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ref_runs / rel, work / "runs" / rel)
    shutil.copytree(ref_runs / "quick/digits/models/iter0", work / "runs/quick/digits/models/iter0")
    return work / "runs/quick/digits/models/iter0"


def _replace(path: Path, content: bytes):
    path.unlink(missing_ok=True)
    path.write_bytes(content)


def _bad_inputs(work, marker):
    """The README's bad-input table: what is wrong -> (the files it spoils and how, the command, what the
    error says). Files are those of a run folder with iteration 0 trained (T=2, method DIAM)."""
    lab, unl = _valid_split()
    iter0, iter1 = "quick/digits/indices/iter0.npz", "quick/digits/indices/T2/DIAM/iter1.npz"
    net0, net1 = "quick/digits/models/iter0/net0.pt", "quick/digits/models/iter0/net1.pt"
    ref = work / "runs"

    def index(labeled, unlabeled, dataset="digits"):
        return lambda path: (path.unlink(missing_ok=True), write_indices(path, labeled, unlabeled, dataset, POOL))

    def truncated(path):
        _replace(path, path.read_bytes()[: path.stat().st_size // 2])

    def pickled_index(path):
        path.unlink()
        np.savez(path, labeled=np.array([_MakeDir(marker)], dtype=object), unlabeled=unl,
                 dataset=np.array("digits"), pool_size=np.array(POOL))

    def pickled_checkpoint(path):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        path.unlink()
        torch.save({**saved, "extra": _MakeDir(marker)}, path)

    train0 = ("train_net.py", "--net_id", 0, "--al_iter", 0)
    select0 = ("al_select.py", "--method", "DIAM", "--al_iter", 0)
    test0 = ("test_multi_models.py", "--method", "DIAM", "--al_iter", 0)
    return {
        "unknown dataset": ([], (*train0, "--dataset", "cifar"), ["unknown dataset", "digits"]),
        "unknown method": ([], (*select0, "--method", "BALD"), ["unknown method", "DIAM"]),
        "unknown preset": ([], (*train0, "--preset", "huge"), ["unknown preset", "quick"]),
        "unknown net_id": ([], (*train0, "--net_id", 12), ["--net_id 12", "0..1"]),
        "net_id >= model_num": ([], (*train0, "--net_id", 3), ["--net_id 3", "0..1"]),
        # Iteration 0's checkpoints are shared across T: a T = 12 run leaves net5.pt beside this T = 2 one.
        "net_id >= model_num, its checkpoint present": (
            [("quick/digits/models/iter0/net5.pt", lambda p: shutil.copy2(ref / net0, p))], (*train0, "--net_id", 5),
            ["--net_id 5", "0..1"]),
        "not a number": ([], (*train0, "--lr", "nan"), ["--lr must be a finite number"]),
        "a batch of one": ([], (*train0, "--train_batch", 1), ["--train_batch must be at least 2"]),
        "work_dir is a file": ([("quick/afile", lambda p: p.write_text(""))],
                               (*train0, "--work_dir", ref / "quick" / "afile"), ["could not write", "afile"]),
        "al_iter outside the preset": ([], (*train0, "--al_iter", 2, "--method", "DIAM"),
                                       ["--al_iter must be between 0 and 1"]),
        "al_iter with no selection": ([], (*train0, "--al_iter", 1, "--method", "DIAM"),
                                      ["no selection has been written for al_iter 1", "al_select.py --al_iter 0"]),
        "index file missing": ([(iter0, Path.unlink)], select0, ["no initial split", "train_net.py --al_iter 0"]),
        "index file truncated": ([(iter0, truncated)], select0, ["damaged or not an index file", iter0]),
        "index file overlapping": ([(iter0, index(lab, np.arange(50, POOL - 10)))], select0,
                                   ["not a partition", iter0]),
        "index file overlapping, in a folder without settings": (
            [(iter0, index(lab, np.arange(50, POOL - 10))), ("quick/digits/config.json", Path.unlink)], select0,
            ["not a partition", iter0]),
        "index file out of range": ([(iter1, index(np.arange(80), np.arange(81, POOL + 1)))],
                                    (*train0, "--al_iter", 1, "--method", "DIAM"), ["not a partition", iter1]),
        "index file of another dataset": ([(iter0, index(lab, unl, "fmnist"))], select0,
                                          ["belongs to dataset 'fmnist'", iter0]),
        "index file pickled": ([(iter0, pickled_index)], select0, ["damaged or not an index file", iter0]),
        "checkpoint missing": ([(net1, Path.unlink)], test0, ["has not been trained", "train_net.py --net_id 1"]),
        "checkpoint damaged": ([(net0, lambda p: _replace(p, b"\x89garbage\x00\xff" * 4096))], test0,
                               ["damaged", net0, "train_net.py --net_id 0"]),
        "checkpoint of another net": ([(net0, lambda p: _replace(p, (ref / net1).read_bytes()))], test0,
                                      ["belongs to another net", "it holds net 1", net0]),
        "checkpoint carrying pickled code": ([(net0, pickled_checkpoint)], test0, ["damaged", net0]),
        "dataset missing, no internet": ([], (*train0, "--dataset", "mnist", "--data_root", work / "data"),
                                         ["could not be downloaded", "train-images-idx3-ubyte", "--dataset digits"]),
        "results into the paper's folder": ([], (*test0, "--results_dir", PROJECT / "extracted_results"),
                                            ["paper's published results"]),
        "other settings in the folder": ([], (*train0, "--epochs", 3, "--redo"), ["other settings", "epochs"]),
    }


def test_bad_input_is_exit_code_2_with_one_paragraph_and_nothing_written(reference, tmp_path):
    ref_runs, _ = reference
    work, marker = tmp_path / "work", tmp_path / "pickle-ran"
    _copy_iteration_0(ref_runs, work)
    (work / "data").mkdir()
    pristine = tmp_path / "pristine"
    shutil.copytree(work / "runs", pristine)
    watched = [work, PROJECT / "extracted_results"]
    for name, (spoils, (script, *args), fragments) in _bad_inputs(work, marker).items():
        for rel, spoil in spoils:
            spoil(work / "runs" / rel)
        before = folder_state(*watched)
        # Later flags win: a case's own flags override the common ones.
        result = run_script_here(script, *common(work), *args)
        try:
            assert_clean_error(result, *(str(work / "runs" / f) if str(f).startswith("quick/") else f
                                         for f in fragments))
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from None
        after = folder_state(*watched)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert changed == [], f"{name}: the refused command changed {changed}"
        for rel, _ in spoils:  # put the run folder back as it was
            (work / "runs" / rel).unlink(missing_ok=True)
            if (pristine / rel).exists():
                shutil.copy2(pristine / rel, work / "runs" / rel)
    assert not marker.exists(), "a pickled object was unpickled"
    # The payloads are live: loaded unsafely, each runs.
    cases = _bad_inputs(tmp_path / "live", marker)
    live = tmp_path / "live" / "runs"
    for name, load in (("index file pickled", lambda p: np.load(p, allow_pickle=True)["labeled"]),
                       ("checkpoint carrying pickled code", lambda p: torch.load(p, weights_only=False))):
        (rel, spoil), = cases[name][0]
        (live / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(pristine / rel, live / rel)
        spoil(live / rel)
        load(live / rel)
        assert marker.exists(), name
        marker.rmdir()


def test_training_that_diverges_is_a_clear_error_and_leaves_no_checkpoint(tmp_path):
    result = run_script_here("train_net.py", *common(tmp_path), "--net_id", 0, "--al_iter", 0, "--lr", "1e30",
                             "--epochs", 1)
    assert_clean_error(result, "training diverged", "--lr")
    assert not list((tmp_path / "runs").rglob("*.pt"))


# ------------------------------------------------------------------ full disk (in-process)
def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_midway(f):
    f.write("half of the new ")
    _no_space()


@pytest.mark.parametrize("where", ["create", "write", "sync", "rename"])
def test_full_disk_is_a_clear_error_and_the_previous_file_stays(tmp_path, monkeypatch, where):
    target = tmp_path / "extracted_results/2/digits/DIAM/0/performances.txt"
    write_text(target, "91.000000 99.000000\n")
    index = tmp_path / "indices/iter0.npz"
    write_indices(index, *_valid_split(), "digits", POOL)
    before = {p: p.read_bytes() for p in (target, index)}
    patch = {"create": ("tempfile.mkstemp", _no_space), "sync": ("os.fsync", _no_space),
             "rename": ("os.replace", _no_space)}.get(where)
    if patch:
        monkeypatch.setattr(patch[0], patch[1])
    with pytest.raises(UserError, match="disk space") as err:
        if where == "write":
            atomic_write(target, _fail_midway, binary=False)
        else:
            write_text(target, "12.000000 50.000000\n")
    assert str(target) in str(err.value) and "No space left on device" in str(err.value)
    if where != "write":
        with pytest.raises(UserError, match="disk space"):
            write_indices(index, np.arange(80), np.arange(80, POOL), "digits", POOL)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in before} == before
    assert temp_files(tmp_path) == []


# ------------------------------------------------------------------ 4. safe loading
def test_pickled_code_in_imagenet_weights_is_refused(tmp_path, monkeypatch):
    # (A checkpoint carrying pickled code is a case of the bad-input test above.)
    marker = tmp_path / "pickle-ran"
    cache = tmp_path / "ofa_cache"
    weights = cache / models.OFA_IDS[0].replace("@", "-") / "init"
    weights.parent.mkdir(parents=True)
    torch.save({"state_dict": models.build_net(0).state_dict(), "extra": _MakeDir(marker)}, weights)
    monkeypatch.setenv("DIAM_OFA_CACHE", str(cache))
    fresh = tmp_path / "fresh"
    trained = run_script_here("train_net.py", "--net_id", 0, "--al_iter", 0, "--init", "pretrained", *common(fresh))
    assert_clean_error(trained, "could not be used", str(weights))
    assert not marker.exists(), "a pickled object was unpickled"
    assert not (fresh / "runs/quick/digits/models/iter0/net0.pt").exists()
    torch.load(weights, map_location="cpu", weights_only=False)  # the payload is live
    assert marker.exists()


# ------------------------------------------------------------------ 5. advice that deletes files
def _run_with_a_checkpoint(tmp_path):
    """Iteration 0 of a digits run (T = 1) with net 0's checkpoint written as train_net.py writes it,
    at its initial weights (what is in the weights does not matter to loading them)."""
    from diam import cli
    from diam.run import Run
    from diam.settings import settings_from_args

    flags = [*common(tmp_path, model_num=1), "--al_iter", 0]
    run = Run(settings_from_args(cli.parser("t", method_required=False).parse_args(list(map(str, flags)))))
    net, _, _ = run.initial_net(0)
    path = run.checkpoint(0)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": net.state_dict(), "info": {"net_id": 0, "dataset": "digits"}}, path)
    run.load_net(0)  # as written, it loads
    return run, path


@pytest.mark.parametrize("error", [TypeError, ValueError, RuntimeError, KeyError])
def test_an_error_in_building_the_net_is_not_called_a_damaged_checkpoint(tmp_path, monkeypatch, error):
    run, path = _run_with_a_checkpoint(tmp_path)
    written = path.read_bytes()

    def broken_builder(*args, **kwargs):
        raise error("a bug in building the net")

    monkeypatch.setattr(models, "build_target", broken_builder)
    with pytest.raises(error, match="a bug in building the net"):
        run.load_net(0)  # the error as it is: no advice to delete a good checkpoint
    assert path.read_bytes() == written


def _keep_state(keep):
    def spoil(path):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        saved["state_dict"] = keep(saved["state_dict"])
        torch.save(saved, path)
    return spoil


def _first_weight_halved(state):
    name = next(k for k, v in state.items() if v.ndim > 1)
    return {**state, name: state[name][: len(state[name]) // 2]}


CHECKPOINT_SPOILS = {  # a truncated or foreign file, and files whose weights do not fit the net
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("not a checkpoint\n"),
    "an .npz": lambda p: p.write_bytes(_npz_bytes()),
    "a plain pickle": lambda p: p.write_bytes(pickle.dumps({"info": {}})),
    "a tensor, not a checkpoint": lambda p: torch.save(torch.zeros(3), p),
    "no record": lambda p: torch.save({"state_dict": {}}, p),
    "a weight the net lacks": _keep_state(lambda state: {**state, "head.weight": torch.zeros(2, 2)}),
    "a weight of another shape": _keep_state(_first_weight_halved),
}


def _npz_bytes():
    buffer = io.BytesIO()
    np.savez(buffer, labeled=np.arange(3))
    return buffer.getvalue()


@pytest.mark.parametrize("spoil", CHECKPOINT_SPOILS)
def test_a_truncated_or_foreign_checkpoint_is_called_damaged(tmp_path, spoil):
    run, path = _run_with_a_checkpoint(tmp_path)
    CHECKPOINT_SPOILS[spoil](path)
    with pytest.raises(UserError, match="is damaged or belongs to another net") as refused:
        run.load_net(0)
    assert str(path) in str(refused.value) and "train_net.py --net_id 0 --al_iter 0" in str(refused.value)


@pytest.mark.parametrize("spoil", ["truncated", "empty", "text", "a plain pickle"])
def test_a_truncated_or_foreign_pool_file_is_called_damaged(tmp_path, spoil):
    from diam.selection_inputs import _pool_predictions

    run, checkpoint = _run_with_a_checkpoint(tmp_path)
    labeled, unlabeled = run.split(make_initial=True)
    path = run.settings.paths.pool_predictions(run.settings.model_num, run.settings.method, 0, 0)
    write_npz(path, unlabeled=unlabeled, unlabeled_probs=np.zeros((len(unlabeled), 10), np.float32))
    assert set(_pool_predictions(run, 0, unlabeled, "unlabeled_probs")) >= {"unlabeled_probs"}
    CHECKPOINT_SPOILS[spoil](path)
    with pytest.raises(UserError, match="is damaged") as refused:
        _pool_predictions(run, 0, unlabeled, "unlabeled_probs")
    assert str(path) in str(refused.value) and str(checkpoint) in str(refused.value)


def test_written_files_take_the_process_umask_read_at_the_first_write_not_at_import(tmp_path):
    # The umask is read when a step first writes, so one set by the process after importing the
    # package (a team's launcher, a shell's `umask`) is the one its files get.
    import subprocess as sp

    code = ("import os, sys; sys.path.insert(0, sys.argv[2]); from diam import paths; os.umask(0o027); "
            "paths.write_text(os.path.join(sys.argv[1], 'a.txt'), 'x'); "
            "print(oct(os.stat(os.path.join(sys.argv[1], 'a.txt')).st_mode & 0o777), oct(os.umask(0o027)))")
    out = sp.run([sys.executable, "-c", code, str(tmp_path), str(PROJECT)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0o640", "0o27"]  # 0666 less the umask; the umask itself left as it was
