"""The loop is one plan (diam/plan.py): iter_all.sh runs its steps in its order, run_grid.py hands them to
workers as arguments, and both refuse the same input."""
import os
import shlex
import subprocess
import sys

import pytest

from conftest import PROJECT
from diam import cli, grid, plan
from diam.errors import UserError

NETS13 = " ".join([f"ofa{n}" for n in range(12)] + ["resnet18"])

# Every option iter_all.sh takes: GPU_ID (cpu, one GPU, several), T, PARALLEL, PRESET, DATASETS, METHODS,
# ITERS (a subset, with a gap), SEEDS and EXTRA_ARGS (--al_iters, --nets, --device, quirks, folders).
CASES = [
    ("cpu", 2, {}),  # the defaults: the paper's preset, datasets and seven methods, every iteration
    ("cpu", 3, {"PRESET": "quick", "DATASETS": "digits fmnist", "METHODS": "random DIAM", "SEEDS": "0 2",
                "PARALLEL": "2"}),
    ("0,1", 4, {"PRESET": "quick", "DATASETS": "digits", "METHODS": "DIAM lewis", "PARALLEL": "3",
                "EXTRA_ARGS": "--al_iters 3 --epochs 2 --work_dir some/runs --original_quirks"}),
    ("1", 1, {"PRESET": "repro", "DATASETS": "digits", "METHODS": "entropy", "ITERS": "1 2",
              "EXTRA_ARGS": "--al_iters 4"}),
    ("cpu", 2, {"PRESET": "quick", "DATASETS": "digits", "METHODS": "coreset CAL", "ITERS": "0 2", "SEEDS": "1",
                "EXTRA_ARGS": "--al_iters 3 --device cpu --redo"}),
    ("cpu", 13, {"PRESET": "quick", "DATASETS": "digits", "METHODS": "margin", "EXTRA_ARGS": f"--nets {NETS13}",
                 "PARALLEL": "4"}),
]


def dry_run(gpu_id, model_num, env) -> str:
    result = subprocess.run(["bash", str(PROJECT / "iter_all.sh"), gpu_id, str(model_num)], capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1", **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def _one_per_net(words) -> list:
    """(script, argv) of each net a command line trains, or of the command line itself."""
    while "=" in words[0]:  # the process's place: OMP_NUM_THREADS=..., CUDA_VISIBLE_DEVICES=...
        words = words[1:]
    assert words[0] == sys.executable
    script, *argv = words[1:]
    if "--net_id" not in argv:
        return [(script, tuple(argv))]
    at = argv.index("--net_id")
    ends = next(i for i in range(at + 1, len(argv)) if argv[i].startswith("--"))
    return [(script, (*argv[:at], "--net_id", n, *argv[ends:])) for n in argv[at + 1:ends]]


def units(script: str) -> list[list]:
    """The dry run's steps, as what runs at once: one command, or the processes started before a 'wait'."""
    found, running = [], []
    for line in script.splitlines():
        if line == "wait":
            found.append(running)
            running = []
        elif line.endswith(" &"):
            running += _one_per_net(shlex.split(line[:-2]))
        else:
            found.append(_one_per_net(shlex.split(line)))
    assert not running, "processes started and never waited for"
    return found


def iter_all_plan_steps(gpu_id, model_num, env) -> list:
    """The plan made from iter_all.sh's input as iter_all.sh gives it to the steps."""
    loop = cli.iter_all_loop([str(model_num), env.get("DATASETS", ""), env.get("METHODS", ""), env.get("ITERS", ""),
                              "--preset", env.get("PRESET", "paper"), *shlex.split(env.get("EXTRA_ARGS", ""))],
                             seeds=[int(s) for s in env.get("SEEDS", "0").split()],
                             device="cpu" if gpu_id == "cpu" else "cuda")
    return plan.steps(loop)


@pytest.mark.parametrize("gpu_id, model_num, env", CASES)
def test_iter_all_runs_the_steps_of_the_plan_in_an_order_that_keeps_every_wait(gpu_id, model_num, env):
    steps = iter_all_plan_steps(gpu_id, model_num, env)
    done = 0
    for unit in units(dry_run(gpu_id, model_num, env)):
        planned = steps[done:done + len(unit)]
        assert sorted(unit) == sorted((s.script, s.argv) for s in planned), (done, unit)
        for step in planned:  # what runs at once, or in one process, waits only for what ran before
            assert all(need < done for need in step.needs), step.command
        done += len(unit)
    assert done == len(steps)


def test_every_script_and_iteration_of_the_loop_is_in_the_comparison():
    steps = [s for case in CASES for s in iter_all_plan_steps(*case)]
    assert {s.script for s in steps} == {plan.TRAIN, plan.TEST, plan.SELECT}
    assert any(s.needs == () and s.al_iter > 0 for s in steps)  # ITERS with a gap: nothing in the plan before it
    assert any(s.script == plan.TRAIN and s.al_iter > 0 and s.needs for s in steps)


@pytest.mark.parametrize("gpu_id, model_num, env", CASES[1:3])
def test_a_steps_arguments_are_what_its_command_line_parses_to(gpu_id, model_num, env):
    parse = {plan.TRAIN: cli.train_args, plan.TEST: cli.test_args, plan.SELECT: cli.select_args}
    steps = iter_all_plan_steps(gpu_id, model_num, env)
    for step in steps:
        assert vars(cli.step_args(step)) == vars(parse[step.script](list(step.argv))), step.command


def test_the_grid_and_iter_all_make_one_plan_for_one_t():
    flags = ["--preset", "quick", "--al_iters", "3", "--epochs", "2"]
    args, extra = grid.parse_args([*flags, "--datasets", "digits", "--model_nums", "2", "--methods", "DIAM",
                                   "random", "--seeds", "0", "1"])
    from_grid = plan.steps(grid.check_args(args, extra))
    from_iter_all = iter_all_plan_steps("cpu", 2, {"PRESET": "quick", "DATASETS": "digits", "METHODS": "DIAM random",
                                                   "SEEDS": "0 1", "EXTRA_ARGS": "--al_iters 3 --epochs 2"})
    assert [(s.script, s.argv, s.needs) for s in from_grid] == [(s.script, s.argv, s.needs) for s in from_iter_all]


@pytest.mark.parametrize("grid_flags, iter_all_input, fragment", [
    (["--datasets", "cifar10"], ["2", "cifar10", "", ""], "unknown dataset 'cifar10'"),
    (["--methods", "bold"], ["2", "digits", "bold", ""], "unknown method 'bold'"),
    (["--model_nums", "13"], ["13", "digits", "", ""], "between 1 and 12"),
    (["--model_nums", "3", "--nets", "ofa0", "ofa1"], ["3", "digits", "", "", "--nets", "ofa0", "ofa1"],
     "--nets names 2 target model(s) (ofa0 ofa1), but --model_num is 3"),
])
def test_the_grid_and_iter_all_refuse_the_same_input(grid_flags, iter_all_input, fragment):
    with pytest.raises(UserError) as refused_by_grid:
        grid.check_args(*grid.parse_args(["--preset", "quick", "--datasets", "digits", *grid_flags]))
    words, flags = iter_all_input[:4], iter_all_input[4:]
    with pytest.raises(UserError) as refused_by_iter_all:
        cli.iter_all_loop([*words, "--preset", "quick", *flags])
    assert fragment in str(refused_by_grid.value) and fragment in str(refused_by_iter_all.value)
