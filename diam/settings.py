"""A step's settings, resolved once from its command line: the preset with its overrides, the
run folder, the device's name, and the step's own choices. `cli.py` builds it from argparse;
`experiment.py` receives it and knows nothing of the command line.

The environment is read here too, once, at the step's entry (`read_environment`): the modules
below take the folders it names as arguments and never read os.environ.
"""
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from .dataset_file import DatasetFile, is_dataset_file, read_dataset_file
from .errors import UserError
from .paths import (DEFAULT_DATA_ROOT, DEFAULT_WORK_DIR, PROJECT_CACHE, RunPaths, check_run_config, read_run_config,
                    refuse_paper_results)
from .datasets import check_dataset
from .methods import METHODS, resolve_settings
from .presets import MAX_MODELS, Preset, default_nets, preset_from_args
from .speed import Speed, speed_from_environment


@dataclass(frozen=True)
class Environment:
    """What a step takes from the environment variables, with their defaults."""
    work_dir: Path  # $DIAM_WORK_DIR: where runs live when --work_dir is not given
    data_root: Path  # $DIAM_DATA_ROOT: where dataset files live when --data_root is not given
    cache: Path  # $DIAM_CACHE: derived copies of data (unpacked .gz files, decoded images)
    ofa_cache: Optional[Path]  # $DIAM_OFA_CACHE: where OFA's ImageNet weights are looked for first


def read_environment() -> Environment:
    ofa_cache = os.environ.get("DIAM_OFA_CACHE")
    return Environment(work_dir=Path(os.environ.get("DIAM_WORK_DIR", DEFAULT_WORK_DIR)),
                       data_root=Path(os.environ.get("DIAM_DATA_ROOT", DEFAULT_DATA_ROOT)),
                       cache=Path(os.environ.get("DIAM_CACHE", PROJECT_CACHE)),
                       ofa_cache=Path(ofa_cache) if ofa_cache else None)


@dataclass(frozen=True)
class StepSettings:
    preset: Preset
    dataset: str  # the dataset's name: a built-in one, or a dataset file's "name"
    model_num: int  # T
    al_iter: int
    method: Optional[str]  # None only where no method applies
    paths: RunPaths
    device: Optional[str] = None  # cpu, cuda or cuda:N; None: cuda when present (`resolve_device`)
    data_root: Path = DEFAULT_DATA_ROOT  # --data_root, else $DIAM_DATA_ROOT, else ./data
    redo: bool = False
    # Every method's own settings (methods.py), one instance per settings class; only selection's flags
    # set them, the other steps keep the defaults. `method_settings` picks a method's.
    strategy_settings: tuple = ()
    speed: Speed = Speed()  # how passes and steps run, never what they compute (DIAM_* variables, diam/speed.py)
    nets: tuple = ()  # the T target models by name (models.py); () for the paper's, ofa0..ofa<T-1>
    dataset_file: Optional[DatasetFile] = None  # the dataset made from files, when it is one
    cache: Path = PROJECT_CACHE  # derived copies of data ($DIAM_CACHE)
    ofa_cache: Optional[Path] = None  # OFA's ImageNet weights, looked for here first ($DIAM_OFA_CACHE)
    # The run folder's config.json as the step found it, already checked against these settings (all
    # but a dataset file's content, known once its images load); None: no script has recorded any yet.
    run_record: Optional[dict] = None

    def method_settings(self, method: Optional[str] = None):
        """The settings `method` (default: this step's) selects with: its class's instance, or its defaults."""
        cls = METHODS[method or self.method].settings
        return next((s for s in self.strategy_settings if type(s) is cls), None) or cls()

    @property
    def target_nets(self) -> tuple:
        return self.nets or default_nets(self.model_num)

    def run_config(self) -> dict:
        return run_config(self.dataset, self.preset, self.nets, self.dataset_file)


def run_config(dataset: str, preset: Preset, nets: tuple = (), dataset_file: Optional[DatasetFile] = None) -> dict:
    """What config.json of a run folder records: every setting, and the mode they add up to.

    Named target nets, a dataset file and linear heads are recorded only when there are some,
    so that the paper's runs keep the config.json they always had (paths.ABSENT_IS_DEFAULT)."""
    config = {"dataset": dataset, "mode": preset.mode, **preset.as_dict()}
    if not preset.linear_heads:
        del config["linear_heads"]
    if nets and tuple(nets) != default_nets(len(nets)):
        config["nets"] = list(nets)
    if dataset_file is not None:
        config["dataset_file"] = dataset_file.recorded
    return config


def resolve_dataset(dataset: str) -> tuple[str, Optional[DatasetFile]]:
    """(name, dataset file or None) of a --dataset value: a built-in dataset's name or a .json file."""
    if is_dataset_file(dataset):
        described = read_dataset_file(dataset)
        return described.name, described
    check_dataset(dataset)
    return dataset, None


def check_method(method: str) -> None:
    """A --method value names one of the selection methods; else a UserError listing them."""
    if method not in METHODS:
        raise UserError(f"unknown method '{method}'. Choose one of: {', '.join(METHODS)}.")


def resolve_nets(names, model_num: int) -> tuple:
    """The T target models named by --nets (checked against models.py when a step loads them), or ()."""
    if not names:
        if not 1 <= model_num <= MAX_MODELS:
            raise UserError(f"--model_num must be between 1 and {MAX_MODELS} (the OFA target nets), "
                            f"got {model_num}; name more target models with --nets.")
        return ()
    if len(names) != model_num:
        raise UserError(f"--nets names {len(names)} target model(s) ({' '.join(names)}), but --model_num is "
                        f"{model_num}: name exactly T models.")
    if len(set(names)) != len(names):
        raise UserError(f"--nets names a model twice ({' '.join(names)}); the T target models are T different ones.")
    return () if tuple(names) == default_nets(model_num) else tuple(names)  # the paper's, named


def settings_from_args(args, results_dir=None) -> StepSettings:
    """Check a parsed command line and resolve it; a UserError says what is wrong and how to fix it."""
    preset = preset_from_args(args)
    name, dataset_file = resolve_dataset(args.dataset)
    if dataset_file is not None:  # a team's own pool and test set: used whole unless the flags ask for a subset
        preset = replace(preset, pool_size=getattr(args, "pool_size", None),
                         test_size=getattr(args, "test_size", None))
    method = getattr(args, "method", None)
    if method is not None:
        check_method(method)
    nets = resolve_nets(getattr(args, "nets", None), args.model_num)
    if not 0 <= args.al_iter < preset.al_iters:
        raise UserError(f"--al_iter must be between 0 and {preset.al_iters - 1} for the "
                        f"'{preset.name}' preset, got {args.al_iter}.")
    environment = read_environment()
    work_dir = args.work_dir or environment.work_dir
    refuse_paper_results(Path(work_dir).resolve(), "--work_dir")  # runs and their default results go inside it
    paths = RunPaths(work_dir, preset.name, name, results_dir, preset.seed)
    # A folder made with other settings is refused before any work (nothing is written here).
    run_record = read_run_config(paths)
    if run_record is not None:
        check_run_config(paths, run_record, run_config(name, preset, nets, dataset_file))
    return StepSettings(preset=preset, dataset=name, model_num=args.model_num, al_iter=args.al_iter,
                        method=method, paths=paths, device=args.device,
                        data_root=Path(args.data_root) if args.data_root else environment.data_root, redo=args.redo,
                        nets=nets, dataset_file=dataset_file, speed=speed_from_environment(),
                        strategy_settings=resolve_settings(args, preset), run_record=run_record,
                        cache=environment.cache, ofa_cache=environment.ofa_cache)


def check_net_index(net_id: int, model_num: int) -> None:
    """--net_id picks one of the T target models; checked before a step looks for its outputs, since
    iteration 0's checkpoints are shared across T and a T = 12 run leaves net5.pt beside a T = 2 one."""
    if not 0 <= net_id < model_num:
        raise UserError(f"--net_id {net_id} is not among the {model_num} target models (0..{model_num - 1}).")


def resolve_device(name: Optional[str]):
    """The torch device a name stands for (None: cuda when present); torch is imported only here."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device '{name}'. Use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for a GPU, but PyTorch sees none here. Use --device cpu.")
    return device
