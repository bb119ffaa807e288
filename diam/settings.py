"""A step's settings, resolved once from its command line: the preset with its overrides, the
run folder, the device's name, and the step's own choices. `cli.py` builds it from argparse;
`experiment.py` receives it and knows nothing of the command line.
"""
from dataclasses import dataclass
from typing import Optional

from .errors import UserError
from .paths import RunPaths, check_run_config, default_work_dir
from .presets import DATASETS, DIAM_QP_Q, MAX_MODELS, METHODS, Preset, preset_from_args
from .speed import Speed, speed_from_environment


@dataclass(frozen=True)
class StepSettings:
    preset: Preset
    dataset: str
    model_num: int  # T: the target models are nets 0..T-1
    al_iter: int
    method: Optional[str]  # None only where no method applies
    paths: RunPaths
    device: Optional[str] = None  # cpu, cuda or cuda:N; None: cuda when present (`resolve_device`)
    data_root: Optional[str] = None  # None: $DIAM_DATA_ROOT or ./data
    redo: bool = False
    diam_q: float = DIAM_QP_Q  # DIAM_qp's weight of the disagreement score (only selection sets it)
    speed: Speed = Speed()  # how passes and steps run, never what they compute (DIAM_* variables, diam/speed.py)

    def run_config(self) -> dict:
        return run_config(self.dataset, self.preset)


def run_config(dataset: str, preset: Preset) -> dict:
    """What config.json of a run folder records: every setting, and the mode they add up to."""
    return {"dataset": dataset, "mode": preset.mode, **preset.as_dict()}


def settings_from_args(args, results_dir=None) -> StepSettings:
    """Check a parsed command line and resolve it; a UserError says what is wrong and how to fix it."""
    preset = preset_from_args(args)
    if args.dataset not in DATASETS:
        raise UserError(f"unknown dataset '{args.dataset}'. Choose one of: {', '.join(DATASETS)}.")
    method = getattr(args, "method", None)
    if method is not None and method not in METHODS:
        raise UserError(f"unknown method '{method}'. Choose one of: {', '.join(METHODS)}.")
    if not 1 <= args.model_num <= MAX_MODELS:
        raise UserError(f"--model_num must be between 1 and {MAX_MODELS} (the OFA target nets), "
                        f"got {args.model_num}.")
    if not 0 <= args.al_iter < preset.al_iters:
        raise UserError(f"--al_iter must be between 0 and {preset.al_iters - 1} for the "
                        f"'{preset.name}' preset, got {args.al_iter}.")
    paths = RunPaths(args.work_dir or default_work_dir(), preset.name, args.dataset, results_dir, preset.seed)
    # A folder made with other settings is refused before any work (nothing is written here).
    check_run_config(paths, run_config(args.dataset, preset), claim=False)
    return StepSettings(preset=preset, dataset=args.dataset, model_num=args.model_num, al_iter=args.al_iter,
                        method=method, paths=paths, device=args.device, data_root=args.data_root,
                        redo=args.redo, diam_q=getattr(args, "DIAMq", DIAM_QP_Q), speed=speed_from_environment())


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
