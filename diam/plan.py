"""The active-learning loop as one list of typed steps: which steps, in which order, what waits for what.

Both executors run this loop: run_grid.py hands the steps to Ray workers (diam/grid.py), and
iter_all.sh, the bash loop the paper's users know, runs the same steps as command lines
(tests/test_plan.py holds it to `steps` step by step). The loop's input is checked here, once,
for both: the lists of datasets, T and methods, the iterations, and T against --nets.

Per seed and dataset, iteration 0's nets are trained once, with the largest T (a net of
iteration 0 does not depend on T or the method); then every (T, method) is a chain: test and
select iteration I, train its T nets for I+1, and so on. Testing and selecting an iteration
wait for its nets only; training waits for the selection before it. A step whose outputs
exist is skipped by the function that runs it (diam/cli.py), so a rerun loop continues.
"""
import shlex
from argparse import Namespace
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from .errors import UserError
from .paths import RunPaths
from .presets import DEFAULT_METHODS, PAPER_DATASETS, Preset, preset_from_args
from .settings import check_method, read_environment, resolve_dataset, resolve_nets

TRAIN, TEST, SELECT = "train_net.py", "test_multi_models.py", "al_select.py"


@dataclass(frozen=True)
class StepFlags:
    """What every step of a loop takes besides its place in the loop: iter_all.sh's PRESET, device and
    EXTRA_ARGS, or run_grid.py's flags for the steps. `words` are the flags as given (what a command line
    shows), `values` the same flags as the steps' parser reads them, with the preset and device: parsed
    once, where the loop is made (diam/cli.py, step_flags)."""
    preset: Optional[str]  # given before the words (PRESET); None: the words name it
    device: Optional[str]  # given before the words (iter_all.sh's GPU_ID, run_grid.py's --gpus_per_train)
    words: tuple
    values: dict  # argparse dest -> value: preset, overrides, quirks, work_dir, data_root, nets, device, redo


@dataclass(frozen=True)
class Step:
    script: str  # TRAIN, TEST or SELECT: the script whose work it is
    dataset: str  # as given: a built-in dataset's name or a dataset file
    method: Optional[str]  # None: iteration 0's training, shared by every method
    al_iter: int
    model_num: int  # T (iteration 0's training: the largest T of the loop)
    seed: int
    flags: StepFlags
    net_id: Optional[int] = None  # training only: one net per step
    chain: str = ""  # what it belongs to, for a progress line: "digits seed 0 T=2 DIAM"
    log: str = ""  # where run_grid.py keeps its output
    needs: tuple = ()  # positions in the plan of the steps that must be done first

    @property
    def argv(self) -> tuple:
        """Its command line after the script's name, in iter_all.sh's order: "--dataset D [--method M]
        --al_iter I [--net_id N] --preset P --model_num T --device DEV <the words> --seed S"."""
        at = ["--dataset", self.dataset, *(["--method", self.method] if self.method else []),
              "--al_iter", str(self.al_iter), *(["--net_id", str(self.net_id)] if self.net_id is not None else [])]
        given = [*(["--preset", self.flags.preset] if self.flags.preset else []), "--model_num", str(self.model_num),
                 *(["--device", self.flags.device] if self.flags.device else [])]
        return (*at, *given, *self.flags.words, "--seed", str(self.seed))

    @property
    def command(self) -> str:
        return shlex.join(["python", self.script, *self.argv])


@dataclass(frozen=True)
class Names:
    """How an executor's user writes the loop's inputs, so that a refusal names what to change."""
    datasets: str
    methods: str
    model_nums: str  # where T comes from
    model_nums_short: str  # the same, as in "T must be 3"
    seeds: str
    nets_hint: str = ""  # where --nets goes, said when T is out of the OFA nets' range


ITER_ALL = Names("DATASETS", "METHODS", "T, iter_all.sh's second argument", "T", "SEEDS",
                 ' --nets goes in EXTRA_ARGS (e.g. EXTRA_ARGS="--nets ofa0 ofa1 resnet18", T = 3).')
GRID = Names("--datasets", "--methods", "--model_nums", "--model_nums", "--seeds")


@dataclass(frozen=True)
class Loop:
    """The loop's input, checked (`make_loop`): every list without repeats, in the order given."""
    datasets: tuple
    model_nums: tuple
    methods: tuple
    seeds: tuple
    flags: StepFlags
    preset: Preset  # resolved from flags.values: its al_iters is the number of iterations
    work_dir: Path  # --work_dir, or its default: where run_grid.py's logs go
    iterations: Optional[tuple] = None  # iter_all.sh's ITERS, as given; None: every iteration of the preset

    @property
    def last_iter(self) -> int:
        return self.preset.al_iters - 1


def make_loop(datasets, model_nums, methods, seeds, flags: StepFlags, iterations=None, names: Names = GRID) -> Loop:
    """The loop's input checked before any step runs; a mistake is a UserError naming the input as
    `names` writes it. Empty dataset or method lists mean the paper's."""
    preset = preset_from_args(Namespace(**flags.values))
    model_nums = tuple(dict.fromkeys(model_nums))
    check_model_nums(model_nums, flags.values.get("nets"), names)
    datasets = tuple(dict.fromkeys(datasets or PAPER_DATASETS))
    methods = tuple(dict.fromkeys(methods or DEFAULT_METHODS))
    for check, given, name in ((resolve_dataset, datasets, names.datasets), (check_method, methods, names.methods)):
        for value in given:  # every name, so that the last dataset's typo stops the loop before the first's run
            try:
                check(value)
            except UserError as err:
                raise UserError(f"{name}: {err}") from None
    if iterations is not None:
        iterations = tuple(check_iteration(i, preset) for i in iterations)
    seeds = tuple(dict.fromkeys(seeds))
    if any(s < 0 for s in seeds):
        raise UserError(f"{names.seeds} must be repeat indices 0, 1, 2, ..., got {' '.join(map(str, seeds))}.")
    work_dir = Path(flags.values["work_dir"] or read_environment().work_dir)
    return Loop(datasets, model_nums, methods, seeds, flags, preset, work_dir, iterations)


def check_model_nums(model_nums, nets, names: Names) -> None:
    """Every T is a number of target models: 1 to 12 (the OFA nets), or as many as --nets names."""
    for model_num in model_nums:
        if nets and model_num != len(nets):
            raise UserError(f"--nets names {len(nets)} target model(s) ({' '.join(nets)}), but --model_num is "
                            f"{model_num}, from {names.model_nums}: {names.model_nums_short} must be {len(nets)}.")
        try:
            resolve_nets(nets, model_num)
        except UserError as err:
            raise UserError(f"{names.model_nums} is every step's --model_num: {err}"
                            f"{'' if nets else names.nets_hint}") from None
    if nets:  # checked now, not at iteration 0's first training (torchvision knows the names)
        from .models import check_target_names

        check_target_names(nets)


def check_iteration(word, preset: Preset) -> int:
    """One of iter_all.sh's ITERS: an iteration of the preset, with any --al_iters override."""
    last = preset.al_iters - 1
    if not (str(word).isdigit() and int(word) <= last):
        raise UserError(f"ITERS: '{word}' is not an iteration of this run: the '{preset.name}' preset (with any "
                        f"--al_iters in EXTRA_ARGS) has iterations 0 to {last}. List some of them, separated by "
                        f"spaces (e.g. ITERS=\"0 1\").")
    return int(word)


def steps(loop: Loop) -> list[Step]:
    """Every step of the loop in the order iter_all.sh runs them, each with the steps it waits for."""
    plan: list[Step] = []

    def add(step: Step, needs=()) -> int:
        plan.append(replace(step, needs=tuple(needs)))
        return len(plan) - 1

    iterations = loop.iterations if loop.iterations is not None else tuple(range(loop.preset.al_iters))
    largest = max(loop.model_nums)
    for seed in loop.seeds:
        for dataset in loop.datasets:
            name, _ = resolve_dataset(dataset)  # a dataset file's folder is its name
            paths = RunPaths(loop.work_dir, loop.preset.name, name, seed=seed)
            where = f"{name} seed {seed}"
            shared = [add(Step(TRAIN, dataset, None, 0, largest, seed, loop.flags, net_id,
                               f"{where} iteration 0", str(paths.step_log(largest, "random", 0, f"train_net{net_id}"))))
                      for net_id in range(largest)]
            for model_num in loop.model_nums:
                for method in loop.methods:
                    chain = f"{where} T={model_num} {method}"
                    trained, selected = {0: shared[:model_num]}, {}

                    def step(script, al_iter, log, net_id=None):
                        return Step(script, dataset, method, al_iter, model_num, seed, loop.flags, net_id, chain,
                                    str(paths.step_log(model_num, method, al_iter, log)))

                    for al_iter in iterations:
                        if al_iter > 0:  # from the selection before it, when this plan makes that one
                            before = [selected[al_iter - 1]] if al_iter - 1 in selected else []
                            trained[al_iter] = [add(step(TRAIN, al_iter, f"train_net{n}", n), before)
                                                for n in range(model_num)]
                        add(step(TEST, al_iter, "test"), trained[al_iter])
                        if al_iter < loop.last_iter and al_iter + 1 in iterations:
                            selected[al_iter] = add(step(SELECT, al_iter, "select"), trained[al_iter])
    return plan
