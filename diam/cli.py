"""Flags shared by the scripts, parsed in one place so they cannot drift apart.

The command-line layer: it parses, resolves the flags once into `settings.StepSettings`,
and hands those to `experiment.py` (which imports nothing from here).
"""
import argparse
from functools import cache
from pathlib import Path
from typing import Callable, NamedTuple

from . import plan
from .errors import UserError
from .paths import refuse_paper_results
from .datasets import DATASETS
from .methods import METHODS, add_settings_flags, settings_problem
from .presets import add_preset_arguments
from .settings import StepSettings, check_net_index, settings_from_args


def parser(description: str, method_required: bool = True, required: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    _add_loop_arguments(p, required=required, method_required=method_required and required)
    _add_run_arguments(p)
    return p


def _add_loop_arguments(p, required: bool, method_required: bool) -> None:
    """The flags that say which step of the loop this is: iter_all.sh sets them for each step."""
    p.add_argument("--dataset", required=required,
                   help=f"one of {', '.join(DATASETS)}, or a .json file describing your own images (docs/own_data.md)")
    p.add_argument("--method", required=method_required, help=f"one of {', '.join(METHODS)}")
    p.add_argument("--al_iter", type=int, required=required, help="active-learning iteration, 0 = initial set")
    p.add_argument("--model_num", type=int, required=required, help="T, the number of target models (nets 0..T-1)")


def _add_run_arguments(p) -> None:
    """The other flags every step takes: what iter_all.sh's EXTRA_ARGS may hold."""
    add_shared_arguments(p)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--redo", action="store_true", help="redo this step even if its outputs exist")


def add_shared_arguments(p) -> None:
    """The flags a loop gives all its steps alike: iter_all.sh's EXTRA_ARGS, run_grid.py's flags for the steps."""
    p.add_argument("--nets", nargs="+", default=None, metavar="NAME",
                   help="the T target models by name: ofa0..ofa11 (the OFA nets) or torchvision classification "
                        "models (resnet18, mobilenet_v3_small, efficientnet_b0, ...); default: ofa0..ofa<T-1>")
    p.add_argument("--work_dir", default=None, help="where runs live (default: $DIAM_WORK_DIR or ./runs)")
    p.add_argument("--data_root", default=None, help="where dataset files live (default: $DIAM_DATA_ROOT or ./data)")
    add_preset_arguments(p)


def finished(*outputs) -> bool:
    """A step whose last outputs exist is complete: report it and skip the work.

    Checked before torch is imported, so resuming a long loop skips finished steps in
    a fraction of a second each.
    """
    if all(o.exists() for o in outputs):
        for o in outputs:
            print(f"already done: {o}")
        return True
    return False


# ---------------------------------------------------------------- the three steps
# Each script's flags and work, here so that the scripts and run_grid.py's workers read
# the same flags and run the same code (a worker builds them from a plan step: step_args).
# `*_settings` resolve a step's command line into its settings, once; `*_outputs` are the files
# that mark the step done, from those settings; `run_*` skips a finished step (True when it did work).
def train_parser(description="Train target nets for one active-learning iteration.", required=True):
    p = parser(description, method_required=False, required=required)
    p.add_argument("--net_id", type=int, nargs="+", required=required,
                   help="target net(s) 0..T-1: OFA net N (SPEC section 2), or the N-th model named by --nets")
    p.add_argument("--mDIS", action="store_true", help="record late-epoch snapshots whatever the method")
    p.add_argument("--DIS_frac", dest="dis_frac", type=float, default=None,
                   help="share of the last epochs that leave snapshots (default: the preset's, 0.5)")
    return p


def train_args(argv=None, description="Train target nets for one active-learning iteration.") -> argparse.Namespace:
    p = train_parser(description)
    return _shared_iteration_0(p.parse_args(argv), p.error)


def _shared_iteration_0(args, error) -> argparse.Namespace:
    """Iteration 0 is trained once for every method, in the folders of 'random'."""
    if args.method is None:
        if args.al_iter != 0:
            error("--method is required after iteration 0 (iteration 0 is shared by all methods)")
        args.method = "random"
    return args


def train_settings(args) -> StepSettings:
    settings = settings_from_args(args)
    for net_id in args.net_id:
        check_net_index(net_id, args.model_num)
    return settings


def train_outputs(settings: StepSettings, args) -> list[Path]:
    return [settings.paths.checkpoint(settings.model_num, settings.method, settings.al_iter, n) for n in args.net_id]


def run_train(args) -> bool:
    settings = train_settings(args)
    if not args.redo and finished(*train_outputs(settings, args)):
        return False
    from .experiment import train_step, train_steps_at_once  # loads torch: only when there is work to do
    from .run import Run

    run = Run(settings)
    if run.speed.concurrent_nets > 1 and len(args.net_id) > 1:
        for line in train_steps_at_once(run, args.net_id, args.mDIS):
            print(line, flush=True)
        return True
    for net_id in args.net_id:
        print(train_step(run, net_id, args.mDIS), flush=True)
    return True


def test_parser(description="Test the T target nets of one iteration.", required=True):
    p = parser(description, required=required)
    p.add_argument("--results_dir", default=None,
                   help="root of the results tree (default: <work_dir>/<preset>/extracted_results)")
    return p


def test_args(argv=None, description="Test the T target nets of one iteration.") -> argparse.Namespace:
    return test_parser(description).parse_args(argv)


def test_settings(args) -> StepSettings:
    settings = settings_from_args(args, args.results_dir)
    refuse_paper_results(settings.paths.results_root, "--results_dir")
    return settings


def test_outputs(settings: StepSettings, args) -> list[Path]:
    return [settings.paths.performances(settings.model_num, settings.method, settings.al_iter)]


def run_test(args) -> bool:
    settings = test_settings(args)
    if not args.redo and finished(*test_outputs(settings, args)):
        return False
    from .experiment import test_step  # loads torch: only when there is work to do
    from .run import Run

    print(test_step(Run(settings)))
    return True


def select_parser(description="Select the next batch of examples to label.", required=True):
    p = parser(description, required=required)
    p.add_argument("--batch_size", type=int, default=None,
                   help="examples to select (default: the preset's query batch, 1500 in the paper)")
    add_settings_flags(p)  # every method's own (methods.py): --DIAMq, --lewis_p, --badge_width, ...
    return p


def select_args(argv=None, description="Select the next batch of examples to label.") -> argparse.Namespace:
    p = select_parser(description)
    args = p.parse_args(argv)
    if args.batch_size is not None and args.batch_size <= 0:
        p.error("--batch_size must be positive")
    problem = settings_problem(args)
    if problem:
        p.error(problem)
    return args


def select_outputs(settings: StepSettings, args) -> list[Path]:
    return [settings.paths.indices(settings.model_num, settings.method, settings.al_iter + 1)]


def run_select(args) -> bool:
    settings = settings_from_args(args)
    if not args.redo and finished(*select_outputs(settings, args)):
        paths, model_num, method, al_iter = settings.paths, settings.model_num, settings.method, settings.al_iter
        sheet = paths.label_sheet(model_num, method, al_iter + 1)
        if sheet.exists():  # a person labels this run: asked again, say again where the images to label are
            print(f"to label: {sheet}, or in Label Studio: {paths.label_studio_tasks(model_num, method, al_iter + 1)}")
        return False
    from .experiment import select_step  # loads torch: only when there is work to do
    from .run import Run

    print(select_step(Run(settings), args.batch_size))
    return True


# ---------------------------------------------------------------- a plan's steps (diam/plan.py)
class Script(NamedTuple):
    parser: Callable  # (required=...) -> its argparse parser
    settings: Callable  # args -> the step's settings, resolved and checked
    outputs: Callable  # (settings, args) -> the files that mark the step done
    run: Callable  # args -> True when it did work, False when it was done already


SCRIPTS = {
    plan.TRAIN: Script(train_parser, train_settings, train_outputs, run_train),
    plan.TEST: Script(test_parser, test_settings, test_outputs, run_test),
    plan.SELECT: Script(select_parser, settings_from_args, select_outputs, run_select),
}


@cache
def _defaults(script: str) -> dict:
    """Every flag of a script at its default, as its parser leaves the flags a command line does not give."""
    return vars(SCRIPTS[script].parser(required=False).parse_args([]))


def step_args(step: plan.Step) -> argparse.Namespace:
    """The step's parsed command line, built from its fields: what its script's parser would return for
    `step.argv`, without writing and parsing that command line."""
    args = argparse.Namespace(**{**_defaults(step.script), **step.flags.values})
    args.dataset, args.method, args.al_iter, args.model_num = step.dataset, step.method, step.al_iter, step.model_num
    args.seed = step.seed  # given last, after the words
    if step.script == plan.TRAIN:
        args.net_id = [step.net_id]
        _shared_iteration_0(args, _refuse)
    return args


def _refuse(message):
    raise UserError(message)


def step_outputs(step: plan.Step) -> list[Path]:
    script, args = SCRIPTS[step.script], step_args(step)
    return script.outputs(script.settings(args), args)


def run_step(step: plan.Step) -> bool:
    """Do the step's work as its script would; True when it did work, False when it was done already."""
    return SCRIPTS[step.script].run(step_args(step))


class _FlagsParser(argparse.ArgumentParser):
    def error(self, message):  # one paragraph and exit 2 (run_cli), not argparse's usage and exit
        raise UserError(f"{self.prog}: {message}. {self.prog} holds flags that every step takes: preset overrides "
                        "such as --epochs 5, --work_dir, --nets (python train_net.py --help lists them).")


def step_flags(words, preset: str = None, device: str = None) -> plan.StepFlags:
    """The flags a loop gives all its steps, parsed once as the steps' parser reads them (abbreviations
    included), after the preset and device the loop puts before them."""
    p = _FlagsParser(prog="EXTRA_ARGS", add_help=False)
    _add_run_arguments(p)
    given = [*(["--preset", preset] if preset else []), *(["--device", device] if device else []), *words]
    return plan.StepFlags(preset, device, tuple(words), vars(p.parse_args(given)))


# ---------------------------------------------------------------- iter_all.sh
# The flags iter_all.sh gives every step itself, each from one of its variables: in EXTRA_ARGS one
# would silently override the loop's value (--dataset and the like) or be overridden (--seed).
LOOP_FLAGS = {  # flag: (where iter_all.sh takes it from, what to do instead)
    "dataset": ("DATASETS", 'set DATASETS (e.g. DATASETS="digits fmnist")'),
    "method": ("METHODS", 'set METHODS (e.g. METHODS="random DIAM")'),
    "al_iter": ("ITERS", 'set ITERS (e.g. ITERS="0 1")'),
    "model_num": ("T, its second argument", "give T there (e.g. bash iter_all.sh cpu 4)"),
    "seed": ("SEEDS", 'set SEEDS (e.g. SEEDS=3, or SEEDS="0 1 2" for three repeats)'),
}


def iter_all_loop(argv, seeds=(0,), device=None) -> plan.Loop:
    """iter_all.sh's input as a plan.Loop, checked by the steps' own flags and the loop's checks.

    argv: T, DATASETS, METHODS and ITERS as given ("" for the defaults), then --preset PRESET and the
    words of EXTRA_ARGS; SEEDS and the device (cpu or cuda, from GPU_ID) as iter_all.sh gives them to
    the steps. A mistake is a UserError."""
    model_num, datasets, methods, iters, preset_flag, preset, *words = argv
    if preset_flag != "--preset":
        raise ValueError(f"iter_all_loop: the fifth word must be --preset, got {preset_flag!r}")
    p = _FlagsParser(prog="EXTRA_ARGS", add_help=False)
    _add_loop_arguments(p, required=False, method_required=False)  # so that abbreviations read as in the steps
    _add_run_arguments(p)
    args = p.parse_args(["--preset", preset, *words])
    for flag, (source, instead) in LOOP_FLAGS.items():
        if getattr(args, flag) is not None:
            raise UserError(f"EXTRA_ARGS names --{flag}, which iter_all.sh gives every step itself from {source}, "
                            f"so one of the two would be ignored. Drop --{flag} from EXTRA_ARGS and {instead}.")
    return plan.make_loop(datasets.split(), [int(model_num)], methods.split(), seeds,
                          step_flags(words, preset=preset, device=device), iters.split() or None, plan.ITER_ALL)


def iter_all_plan(argv) -> str:
    """What iter_all.sh reads before its first step: three lines, the last iteration of the preset (with
    any --al_iters override), then the datasets and the methods to run (argv: as `iter_all_loop`'s)."""
    loop = iter_all_loop(argv)
    return "\n".join([str(loop.last_iter), " ".join(loop.datasets), " ".join(loop.methods)])
