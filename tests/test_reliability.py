"""Reliability: interrupted loops resume to the same result, loops share a folder safely,
bad inputs give one clear error and change nothing, full disks and pickled code are refused.

Every loop here runs at a tiny size (TINY) with one thread per process, so runs are
bit-for-bit reproducible and the whole file stays near two minutes on two cores.
"""
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock

from conftest import PROJECT, assert_clean_error
from diam import models
from diam.errors import UserError
from diam.paths import atomic_write, write_indices, write_text
from diam.results import load_results

TINY = ["--al_iters", "2", "--epochs", "2", "--pool_size", "400", "--test_size", "200",
        "--initial_labeled", "60", "--query_batch", "20"]
POOL = 400
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
LEAN = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ------------------------------------------------------------------ helpers
class _MakeDir:
    """A pickled payload: unpickling it runs os.mkdir(marker). Safe loaders must refuse it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _env(home, extra=None):
    return {**os.environ, **OFFLINE, **LEAN, "HOME": str(home), "DIAM_DATA_ROOT": str(home / "data"),
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


def run_together(*jobs, cwd):
    """Run several independent scripts at once (saves start-up time); CompletedProcess per job, in order.

    A job is (script, args, extra_env)."""
    procs = [subprocess.Popen([sys.executable, str(PROJECT / script), *map(str, args)], cwd=cwd,
                              env=_env(cwd, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for script, args, env in jobs]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


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
KILLS = [  # (signal, the file under runs/quick whose appearance triggers it)
    (signal.SIGKILL, "digits/models/iter0/net0_pool.npz"),  # net 0 half saved: its checkpoint not yet written
    (signal.SIGTERM, "digits/models/iter0/net0.pt"),  # net 1 of iteration 0 starting to train
    (signal.SIGINT, "extracted_results/2/digits/DIAM/0/performances.txt"),  # between testing and selecting
    (signal.SIGKILL, "digits/models/T2/DIAM/iter1/net0.pt"),  # net 1 of iteration 1 starting to train
]


def test_loop_killed_at_several_points_resumes_to_exactly_the_clean_result(reference, tmp_path, spawned):
    ref_runs, ref_outputs = reference
    base = tmp_path / RUNS_QUICK
    for n, (sig, trigger) in enumerate(KILLS):
        proc = start_loop(tmp_path, 2, spawned, tag=f"-{n}-{sig.name}")
        deadline = time.monotonic() + 300
        while not (base / trigger).exists():
            if proc.poll() is not None:
                pytest.fail(f"the loop ended (rc {proc.returncode}) before {trigger} appeared:\n{logs(proc)}")
            assert time.monotonic() < deadline, f"{trigger} did not appear:\n{logs(proc)}"
            time.sleep(0.02)
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
# Stands in for python: the preset has 2 iterations; a step logs itself and then, as a Python
# step does when Ctrl-C lands while it is exiting, ignores the interrupt and exits 0.
if [ "$1" = "-c" ]; then echo 1; exit 0; fi
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
    assert not (tmp_path / RUNS_QUICK / "digits/models/iter0/net1.pt").exists(), "the interrupt came too late"

    # Iteration 0 only (the later ones train the same way) keeps the suite short.
    final = start_loop(tmp_path, 2, spawned, tag="-final", env={"PARALLEL": "2", "ITERS": "0"})
    finish(final)
    out = final.logs[0].read_text()
    assert "training nets 0 on cpu" in out and "training nets 1 on cpu" in out, out
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


# ------------------------------------------------------------------ 3. bad input: clear error, nothing changed
def _valid_split():
    return np.arange(60), np.arange(60, POOL)


def test_bad_index_files_are_clear_errors_and_are_left_as_they_are(tmp_path):
    lab, unl = _valid_split()
    marker = tmp_path / "pickle-ran"

    def truncated(path):
        write_indices(path, lab, unl, "digits", POOL)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def pickled(path):
        np.savez(path, labeled=np.array([_MakeDir(marker)], dtype=object), unlabeled=unl,
                 dataset=np.array("digits"), pool_size=np.array(POOL))

    iter0, iter1 = "quick/digits/indices/iter0.npz", "quick/digits/indices/T2/DIAM/iter1.npz"
    train0 = ("train_net.py", ["--net_id", 0, "--al_iter", 0], "quick/digits/models/iter0/net0.pt")
    select0 = ("al_select.py", ["--method", "DIAM", "--al_iter", 0], iter1)
    train1 = ("train_net.py", ["--net_id", 0, "--al_iter", 1, "--method", "DIAM"],
              "quick/digits/models/T2/DIAM/iter1/net0.pt")
    cases = {  # name: (how the file is spoilt, where, the step that reads it, what the error says)
        "truncated": (truncated, iter0, train0, "damaged or not an index file"),
        "overlapping": (lambda p: write_indices(p, lab, np.arange(50, POOL - 10), "digits", POOL), iter0, select0,
                        "not a partition"),
        "out of range": (lambda p: write_indices(p, np.arange(80), np.arange(81, POOL + 1), "digits", POOL), iter1,
                         train1, "not a partition"),
        "another dataset": (lambda p: write_indices(p, lab, unl, "fmnist", POOL), iter0, select0,
                            "belongs to dataset 'fmnist'"),
        "pickled object": (pickled, iter0, train0, "damaged or not an index file"),
    }
    jobs, files = [], {}
    for name, (spoil, rel, (script, args, _), _) in cases.items():
        work = tmp_path / name.replace(" ", "_")
        path = work / "runs" / rel
        path.parent.mkdir(parents=True)
        spoil(path)
        files[name] = (path, path.read_bytes())
        jobs.append((script, [*args, *common(work)], None))
    for (name, (_, _, (_, _, output), fragment)), result in zip(cases.items(), run_together(*jobs, cwd=tmp_path)):
        path, content = files[name]
        assert_clean_error(result, fragment, str(path))
        assert path.read_bytes() == content, f"{name}: the index file was changed"
        work = tmp_path / name.replace(" ", "_")
        assert not (work / "runs" / output).exists(), f"{name}: the step wrote its output anyway"
        assert temp_files(work) == []
    assert not marker.exists(), "an index file's pickled object was unpickled"
    with np.load(files["pickled object"][0], allow_pickle=True) as z:  # the payload is live: the test can fail
        z["labeled"]
    assert marker.exists()


def _copy_iteration_0(ref_runs, work):
    """A run folder holding the clean run's settings, initial split and iteration-0 nets."""
    for rel in ("quick/digits/config.json", "quick/digits/indices/iter0.npz"):
        (work / "runs" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ref_runs / rel, work / "runs" / rel)
    shutil.copytree(ref_runs / "quick/digits/models/iter0", work / "runs/quick/digits/models/iter0")
    return work / "runs/quick/digits/models/iter0"


def _test_nets(work):
    return "test_multi_models.py", ["--method", "random", "--al_iter", 0, *common(work)], None


def test_checkpoint_of_another_net_or_damaged_is_a_clear_error_and_kept(reference, tmp_path):
    ref_runs, _ = reference
    cases = {"another net": lambda folder: shutil.copyfile(folder / "net1.pt", folder / "net0.pt"),
             "garbage": lambda folder: (folder / "net0.pt").write_bytes(b"\x89garbage\x00\xff" * 4096)}
    jobs, kept = [], {}
    for name, spoil in cases.items():
        work = tmp_path / name.replace(" ", "_")
        folder = _copy_iteration_0(ref_runs, work)
        spoil(folder)
        kept[name] = (folder / "net0.pt").read_bytes()
        jobs.append(_test_nets(work))
    results = dict(zip(cases, run_together(*jobs, cwd=tmp_path)))
    assert_clean_error(results["another net"], "belongs to another net", "it holds net 1", "net0.pt")
    assert_clean_error(results["garbage"], "damaged", "net0.pt", "train_net.py --net_id 0")
    for name in cases:
        work = tmp_path / name.replace(" ", "_")
        assert (work / "runs/quick/digits/models/iter0/net0.pt").read_bytes() == kept[name]
        assert not (work / "runs/quick/extracted_results/2/digits/random/0").exists()


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
def test_pickled_code_in_a_checkpoint_or_in_imagenet_weights_is_refused(reference, tmp_path):
    ref_runs, _ = reference
    marker = tmp_path / "pickle-ran"
    # A trained checkpoint that also carries code to run when unpickled.
    work = tmp_path / "checkpoint"
    folder = _copy_iteration_0(ref_runs, work)
    saved = torch.load(folder / "net0.pt", map_location="cpu", weights_only=True)
    torch.save({**saved, "extra": _MakeDir(marker)}, folder / "net0.pt")
    checkpoint = (folder / "net0.pt").read_bytes()
    # ImageNet weights in the cache that carry the same payload.
    cache = tmp_path / "ofa_cache"
    weights = cache / models.OFA_IDS[0].replace("@", "-") / "init"
    weights.parent.mkdir(parents=True)
    torch.save({"state_dict": models.build_net(0).state_dict(), "extra": _MakeDir(marker)}, weights)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    tested, trained = run_together(
        _test_nets(work),
        ("train_net.py", ["--net_id", 0, "--al_iter", 0, "--init", "pretrained", *common(fresh)],
         {"DIAM_OFA_CACHE": str(cache)}), cwd=tmp_path)
    assert_clean_error(tested, "net0.pt", "damaged")
    assert_clean_error(trained, "could not be used", str(weights))
    assert not marker.exists(), "a pickled object was unpickled"
    assert (folder / "net0.pt").read_bytes() == checkpoint
    assert not (work / "runs/quick/extracted_results/2/digits/random/0").exists()
    assert not (fresh / "runs/quick/digits/models/iter0/net0.pt").exists()
    torch.load(folder / "net0.pt", map_location="cpu", weights_only=False)  # the payload is live
    assert marker.exists()
