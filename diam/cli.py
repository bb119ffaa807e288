"""Flags shared by the scripts, parsed in one place so they cannot drift apart.

The command-line layer: it parses, resolves the flags once into `settings.StepSettings`,
and hands those to `experiment.py` (which imports nothing from here).
"""
import argparse
from pathlib import Path

from .errors import UserError
from .paths import refuse_paper_results
from .datasets import DATASETS
from .methods import METHODS, add_settings_flags, settings_problem
from .presets import DEFAULT_METHODS, PAPER_DATASETS, add_preset_arguments, preset_from_args
from .settings import check_method, check_net_index, resolve_dataset, resolve_nets, settings_from_args


def parser(description: str, method_required: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    _add_loop_arguments(p, required=True, method_required=method_required)
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
    p.add_argument("--nets", nargs="+", default=None, metavar="NAME",
                   help="the T target models by name: ofa0..ofa11 (the OFA nets) or torchvision classification "
                        "models (resnet18, mobilenet_v3_small, efficientnet_b0, ...); default: ofa0..ofa<T-1>")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--work_dir", default=None, help="where runs live (default: $DIAM_WORK_DIR or ./runs)")
    p.add_argument("--data_root", default=None, help="where dataset files live (default: $DIAM_DATA_ROOT or ./data)")
    p.add_argument("--redo", action="store_true", help="redo this step even if its outputs exist")
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
# Each script's flags and work, here so that the scripts and run_grid.py's workers
# parse the same command lines and run the same code. `*_outputs` are the files that
# mark a step done; `run_*` skips a finished step (True when it did work).
def train_args(argv=None, description="Train target nets for one active-learning iteration.") -> argparse.Namespace:
    p = parser(description, method_required=False)
    p.add_argument("--net_id", type=int, nargs="+", required=True,
                   help="target net(s) 0..T-1: OFA net N (SPEC section 2), or the N-th model named by --nets")
    p.add_argument("--mDIS", action="store_true", help="record late-epoch snapshots whatever the method")
    p.add_argument("--DIS_frac", dest="dis_frac", type=float, default=None,
                   help="share of the last epochs that leave snapshots (default: the preset's, 0.5)")
    args = p.parse_args(argv)
    if args.method is None:
        if args.al_iter != 0:
            p.error("--method is required after iteration 0 (iteration 0 is shared by all methods)")
        args.method = "random"
    return args


def train_outputs(args) -> list[Path]:
    settings = settings_from_args(args)
    for net_id in args.net_id:
        check_net_index(net_id, args.model_num)
    return [settings.paths.checkpoint(args.model_num, args.method, args.al_iter, n) for n in args.net_id]


def run_train(args) -> bool:
    if not args.redo and finished(*train_outputs(args)):
        return False
    from .experiment import Run, train_step, train_steps_at_once  # loads torch: only when there is work to do

    run = Run(settings_from_args(args))
    if run.speed.concurrent_nets > 1 and len(args.net_id) > 1:
        for line in train_steps_at_once(run, args.net_id, args.mDIS):
            print(line, flush=True)
        return True
    for net_id in args.net_id:
        print(train_step(run, net_id, args.mDIS), flush=True)
    return True


def test_args(argv=None, description="Test the T target nets of one iteration.") -> argparse.Namespace:
    p = parser(description)
    p.add_argument("--results_dir", default=None,
                   help="root of the results tree (default: <work_dir>/<preset>/extracted_results)")
    return p.parse_args(argv)


def test_outputs(args) -> list[Path]:
    paths = settings_from_args(args, args.results_dir).paths
    refuse_paper_results(paths.results_root, "--results_dir")
    return [paths.performances(args.model_num, args.method, args.al_iter)]


def run_test(args) -> bool:
    if not args.redo and finished(*test_outputs(args)):
        return False
    from .experiment import Run, test_step  # loads torch: only when there is work to do

    print(test_step(Run(settings_from_args(args, args.results_dir))))
    return True


def select_args(argv=None, description="Select the next batch of examples to label.") -> argparse.Namespace:
    p = parser(description)
    p.add_argument("--batch_size", type=int, default=None,
                   help="examples to select (default: the preset's query batch, 1500 in the paper)")
    add_settings_flags(p)  # every method's own (methods.py): --DIAMq, --lewis_p, --badge_width, ...
    args = p.parse_args(argv)
    if args.batch_size is not None and args.batch_size <= 0:
        p.error("--batch_size must be positive")
    problem = settings_problem(args)
    if problem:
        p.error(problem)
    return args


def select_outputs(args) -> list[Path]:
    return [settings_from_args(args).paths.indices(args.model_num, args.method, args.al_iter + 1)]


def run_select(args) -> bool:
    if not args.redo and finished(*select_outputs(args)):
        paths = settings_from_args(args).paths
        sheet = paths.label_sheet(args.model_num, args.method, args.al_iter + 1)
        if sheet.exists():  # a person labels this run: asked again, say again where the images to label are
            print(f"to label: {sheet}, or in Label Studio: "
                  f"{paths.label_studio_tasks(args.model_num, args.method, args.al_iter + 1)}")
        return False
    from .experiment import Run, select_step  # loads torch: only when there is work to do

    print(select_step(Run(settings_from_args(args)), args.batch_size))
    return True


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


class _ExtraArgsParser(argparse.ArgumentParser):
    def error(self, message):  # one paragraph and exit 2 (run_cli), not argparse's usage and exit
        raise UserError(f"EXTRA_ARGS: {message}. EXTRA_ARGS holds flags that every step takes: preset overrides "
                        "such as --epochs 5, --work_dir, --nets (python train_net.py --help lists them).")


def iter_all_plan(argv) -> str:
    """iter_all.sh's input, checked by the steps' own flags and checks before its first step runs.

    argv: T, DATASETS, METHODS and ITERS as given ("" for the defaults), then --preset PRESET
    and the words of EXTRA_ARGS. Returns three lines: the last iteration of the preset (with any
    --al_iters override), the datasets and the methods to run. A mistake is a UserError."""
    model_num, datasets, methods, iters, *flags = argv
    p = _ExtraArgsParser(prog="iter_all.sh", add_help=False, description="iter_all.sh's EXTRA_ARGS")
    _add_loop_arguments(p, required=False, method_required=False)  # so that abbreviations read as in the steps
    _add_run_arguments(p)
    args = p.parse_args(flags)
    for flag, (source, instead) in LOOP_FLAGS.items():
        if getattr(args, flag) is not None:
            raise UserError(f"EXTRA_ARGS names --{flag}, which iter_all.sh gives every step itself from {source}, "
                            f"so one of the two would be ignored. Drop --{flag} from EXTRA_ARGS and {instead}.")
    preset = preset_from_args(args)
    try:
        resolve_nets(args.nets, int(model_num))  # up to MAX_MODELS, or as many as --nets names
    except UserError as err:
        where = "" if args.nets else ' --nets goes in EXTRA_ARGS (e.g. EXTRA_ARGS="--nets ofa0 ofa1 resnet18", T = 3).'
        raise UserError(f"T, iter_all.sh's second argument, is every step's --model_num: {err}{where}") from None
    if args.nets:  # checked here, not at iteration 0's first training (torchvision knows the names)
        from .models import check_target_names

        check_target_names(args.nets)
    datasets, methods = datasets.split() or PAPER_DATASETS, methods.split() or DEFAULT_METHODS
    for check, names, variable in ((resolve_dataset, datasets, "DATASETS"), (check_method, methods, "METHODS")):
        for name in names:  # every name, so that the last dataset's typo stops the loop before the first's run
            try:
                check(name)
            except UserError as err:
                raise UserError(f"{variable}: {err}") from None
    last = preset.al_iters - 1
    for i in iters.split():
        if not (i.isdigit() and int(i) <= last):
            raise UserError(f"ITERS: '{i}' is not an iteration of this run: the '{preset.name}' preset (with any "
                            f"--al_iters in EXTRA_ARGS) has iterations 0 to {last}. List some of them, separated by "
                            f"spaces (e.g. ITERS=\"0 1\").")
    return "\n".join([str(last), " ".join(datasets), " ".join(methods)])
