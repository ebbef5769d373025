"""The ``chh`` command line: phantom, train, calibrate, evaluate, predict, pretrained, export.

Every command prints a clear one-line error (and exits with status 2) when its
input is bad, instead of a traceback from deep inside a library.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chh_lib.errors import ChhError

logger = logging.getLogger("chh_lib")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``chh`` and its sub-commands."""
    parser = argparse.ArgumentParser(prog="chh", description="Contour-hugging heatmaps: data, training, evaluation.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an operating-system error")
    commands = parser.add_subparsers(dest="command", required=True)

    phantom = commands.add_parser("phantom", help="generate synthetic cephalograms (ISBI 2015 layout or labelme files)")
    phantom.add_argument("out_dir", type=Path)
    phantom.add_argument("--num-images", type=_positive_int, default=400)
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("W", "H"), default=(640, 800))
    phantom.add_argument("--hard-fraction", type=float, default=0.1)
    phantom.add_argument("--overwrite", action="store_true", help="replace what OUT_DIR holds")
    phantom.add_argument("--format", choices=("isbi2015", "labelme"), default="isbi2015",
                         help="isbi2015 (default): the ISBI layout; labelme: labelme 5 JSON files beside PNG images")
    phantom.add_argument("--annotators", type=int, choices=(1, 2),
                         help="labelme: write the senior annotator only (1) or senior and junior (2, default)")
    phantom.add_argument("--plant-mess", action="store_true",
                         help="labelme: plant duplicated labels, imagePath values naming other files and a corrupt "
                              "image (seeded; listed in dataset.yaml under generator.planted)")
    phantom.set_defaults(handler=_run_phantom)

    train = commands.add_parser("train", help="train a heatmap network")
    train.add_argument("--data", type=Path, required=True, help="data set folder (ISBI 2015 layout)")
    train.add_argument("--run-dir", type=Path, required=True)
    train.add_argument("--profile", choices=("smoke", "cpu", "paper"), default="cpu")
    train.add_argument("--protocol", choices=("clean", "paper"), help="ISBI 2015 split protocol (default: clean)")
    train.add_argument("--epochs", type=_positive_int, help="override the profile's number of epochs")
    train.add_argument("--batch-size", type=_positive_int,
                       help="override the profile's global batch (split over --nproc processes)")
    train.add_argument("--lr", type=float, help="override the profile's learning rate (not rescaled for you)")
    train.add_argument("--max-steps", type=_positive_int,
                       help="stop after N optimiser steps in all (a bounded run; the checkpoint stays valid)")
    train.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--nproc", type=_positive_int, default=1,
                       help="train in N processes on this machine (torchrun, DistributedDataParallel; one per GPU)")
    train.set_defaults(handler=_run_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a run on a split")
    evaluate.add_argument("--run-dir", type=Path, required=True)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--data", type=Path, help="default: the data set the run was trained on")
    evaluate.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    evaluate.add_argument("--sdr-inclusive", action="store_true", help="count error <= threshold as a success")
    evaluate.add_argument("--outlier-mm", type=_positive_float, metavar="MM",
                          help="radial error above which a prediction is an outlier (default: the cut chh calibrate "
                               "chose the ERE threshold at, else 4 mm, the paper's)")
    evaluate.set_defaults(handler=_run_evaluate)

    calibrate = commands.add_parser("calibrate", help="fit temperatures (per landmark or global) on held-out data")
    calibrate.add_argument("--run-dir", type=Path, required=True)
    calibrate.add_argument("--split", default="calibration", help="held-out split (never test or test2)")
    calibrate.add_argument("--method", choices=("nll", "paper"), default="nll",
                           help="nll: L-BFGS on the NLL (default); paper: the authors' Adam + ECE selection")
    calibrate.add_argument("--scope", choices=("auto", "none", "global", "per-landmark"), default="auto",
                           help="no temperature (T = 1), one for all, one per landmark, or auto (default): the one "
                                "with the lowest cross-validated NLL on the split")
    calibrate.add_argument("--outlier-mm", type=_positive_float, metavar="MM",
                           help="radial error above which a prediction is an outlier when the ERE threshold is "
                                "chosen (default 4 mm, the paper's); stored with the threshold")
    calibrate.add_argument("--epochs", type=_positive_int, default=15, help="epochs of the paper method (the authors: 15)")
    calibrate.add_argument("--data", type=Path, help="default: the data set the run was trained on")
    calibrate.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    calibrate.set_defaults(handler=_run_calibrate)

    notebooks = commands.add_parser("notebooks", help="run the notebook series headless with papermill")
    notebooks.add_argument("--run-dir", type=Path, required=True, help="shared run directory of the series")
    notebooks.add_argument("--profile", choices=("smoke", "cpu", "paper"), default="cpu")
    notebooks.add_argument("--only", help="comma-separated notebook numbers, e.g. 03,04")
    notebooks.add_argument("--data", type=Path, help="data set (default: the profile's phantom)")
    notebooks.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    notebooks.add_argument("--seed", type=int, default=0)
    notebooks.add_argument("--solutions", action="store_true",
                           help="also run the exercises' hidden solutions (every check must then pass)")
    notebooks.set_defaults(handler=_run_notebooks)

    predict = commands.add_parser("predict", help="apply a trained run to new images (no annotations needed)")
    predict.add_argument("--run-dir", type=Path, required=True)
    predict.add_argument("--images", nargs="+", required=True, metavar="DIR_OR_GLOB",
                         help="image files, folders (their images) or quoted glob patterns")
    predict.add_argument("--out", type=Path, required=True, help="CSV to write: one row per (image, landmark)")
    predict.add_argument("--pixel-size-mm", type=float, nargs="+", metavar="MM",
                         help="spacing of the images, one value or x y (default: the run's training spacing)")
    predict.add_argument("--decode", choices=("argmax", "quadratic"), default="argmax",
                         help="argmax: the paper's pixel (default); quadratic: sub-pixel refinement")
    predict.add_argument("--heatmaps-dir", type=Path, help="also write each image's heatmaps (.npz)")
    predict.add_argument("--overlay-dir", type=Path, help="also write each image with its predictions (.png)")
    predict.add_argument("--batch-size", type=_positive_int, help="images per forward pass (default: the run's)")
    predict.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.add_argument("--outlier-mm", type=_positive_float, metavar="MM",
                         help="the outlier cut the flags must mean; refused unless it is the one chh calibrate "
                              "chose the run's ERE threshold at (default: that one)")
    predict.set_defaults(handler=_run_predict)

    data = commands.add_parser("data", help="inspect a data set")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser("check", help="validate a data set without training")
    check.add_argument("data_dir", type=Path)
    check.add_argument("--protocol", choices=("clean", "paper"))
    check.set_defaults(handler=_run_data_check)

    pretrained = commands.add_parser("pretrained", help="write a run directory holding the shipped phantom model")
    pretrained.add_argument("run_dir", type=Path)
    pretrained.add_argument("--data", type=Path, help="data set to record for chh evaluate")
    pretrained.add_argument("--checkpoint", type=Path,
                            help="a checkpoint written by chh export (default: the shipped phantom model)")
    pretrained.set_defaults(handler=_run_pretrained)

    export = commands.add_parser("export", help="write a run's weights as a slim checkpoint (no optimiser state)")
    export.add_argument("run_dir", type=Path)
    export.add_argument("out_path", type=Path)
    export.add_argument("--note", action="append", default=[], metavar="KEY=VALUE", help="provenance to store")
    export.set_defaults(handler=_run_export)
    return parser


def _run_phantom(args: argparse.Namespace) -> None:
    from chh_lib.data.phantom_dataset import write_phantom_dataset
    from chh_lib.landmarks import ISBI_2015

    if args.format == "labelme":
        _run_labelme_phantom(args)
        return
    if args.plant_mess or args.annotators is not None:
        raise ChhError("--plant-mess and --annotators apply to --format labelme only")
    summary = write_phantom_dataset(
        args.out_dir, args.num_images, args.seed, tuple(args.image_size), args.hard_fraction, args.overwrite
    )
    state = "wrote" if summary.written else "already up to date:"
    counts = ", ".join(f"{name} {count}" for name, count in summary.split_counts.items())
    print(f"{state} {summary.root} ({counts}; {summary.num_hard} hard cases)")
    print(f"{'landmark':<24} {'annotator distance (mm)':>24} {'SD along/across':>16}")
    for name, distance, ratio in zip(ISBI_2015.names, summary.mean_distance_mm, summary.along_across_ratio):
        ratio_text = "-" if np.isnan(ratio) else f"{ratio:.1f}"
        print(f"{name:<24} {distance:>24.2f} {ratio_text:>16}")
    print(f"{'mean':<24} {summary.mean_distance_mm.mean():>24.2f}")
    print("SD along/across: SD of the annotators' difference along the contour tangent over the SD across it")


def _run_labelme_phantom(args: argparse.Namespace) -> None:
    from chh_lib.data.messy_labelme import ANNOTATOR_FOLDERS, MessCounts, write_labelme_phantom

    summary = write_labelme_phantom(
        args.out_dir, args.num_images, args.seed, tuple(args.image_size), args.hard_fraction, args.annotators or 2,
        MessCounts() if args.plant_mess else None, args.overwrite,
    )
    state = "wrote" if summary.written else "already up to date (dataset.yaml kept as it is):"
    folders = ", ".join(f"{name} in {ANNOTATOR_FOLDERS[name]}/" for name in summary.annotators)
    print(f"{state} {summary.root}: {summary.num_images} PNG images with labelme 5 files ({folders})")
    planted = summary.planted
    if not planted:
        print(f"no mess planted; next: chh data check {summary.root}")
        return
    print("planted mess (also listed in dataset.yaml under generator.planted):")
    duplicates = planted["duplicate_labels"]
    print(f"  {len(duplicates)} files place a label twice (a stray second click): "
          + ", ".join(f"{entry['file']} ({entry['label']})" for entry in duplicates))
    kinds = {
        "old_names": "imagePath is the old name",
        "windows_paths": "imagePath is a Windows path to another name",
        "windows_same_name": "imagePath is a Windows path to the right name (not mess: only the file name counts)",
    }
    for kind, words in kinds.items():
        print(f"  {len(planted[kind])} files: {words}: "
              + ", ".join(f"{entry['file']} ({entry['imagePath']})" for entry in planted[kind]))
    print("  corrupt images (cut to half their bytes): " + ", ".join(planted["corrupt_images"]))
    print(f"next: chh data check {summary.root}")


def _run_train(args: argparse.Namespace) -> int | None:
    from chh_lib.config import load_config, profile_config
    from chh_lib.data.formats import log_data_handling, read_landmark_data
    from chh_lib.devices import choose_device
    from chh_lib.distributed import context_from_environment, launch_command, per_process_batch_size, process_group
    from chh_lib.engine import LAST_CHECKPOINT, make_training_dataset, train
    from chh_lib.evaluation import default_cache_dir

    distributed = context_from_environment()
    if not distributed.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one process reports
    run_dir: Path = args.run_dir
    if args.resume:
        config = load_config(run_dir / "config.yaml")
        if config.profile != args.profile and "--profile" in sys.argv:
            logger.warning("resuming with the run's own profile %r, not %r", config.profile, args.profile)
    else:
        if (run_dir / LAST_CHECKPOINT).exists():
            raise ChhError(f"{run_dir / LAST_CHECKPOINT}: a checkpoint is already there; use --resume or another --run-dir")
        config = profile_config(args.profile)
    if args.epochs is not None:
        config.train.epochs = args.epochs
    if args.max_steps is not None:
        config.train.max_steps = args.max_steps
    if args.batch_size is not None:
        config.train.batch_size = args.batch_size
    if args.lr is not None:
        if not args.lr > 0:
            raise ChhError(f"--lr must be positive, got {args.lr}")
        config.train.lr = args.lr
    if args.protocol is not None and not args.resume:
        config.data.protocol = args.protocol
    if args.nproc > 1 and not distributed.enabled:
        per_process_batch_size(config.train.batch_size, args.nproc)  # refuse before starting any process
        return subprocess.call(launch_command(args.nproc, _without_nproc(args.argv)))
    device = distributed.device(choose_device(args.device))
    if distributed.is_main:
        _log_to_file(run_dir / "train.log")
    data = read_landmark_data(args.data, protocol=config.data.protocol)
    log_data_handling(data)
    dataset = make_training_dataset(config, data.split("train"), default_cache_dir(args.data, run_dir))
    logger.info(
        "training %s (%s profile) on %d images at %dx%d on %s",
        config.model.name, config.profile, len(dataset), *config.data.image_size, device,
    )
    with process_group(distributed, device):
        result = train(config, dataset, run_dir, args.data, device, resume=args.resume, progress=not args.no_progress,
                       distributed=distributed, data_handling=data.handling())
    last = result.history[-1] if result.history else None
    if last and distributed.is_main:
        steps = sum(int(row.get("steps", 0)) for row in result.history)
        print(f"trained {len(result.history)} epochs ({steps} optimiser steps), last loss {last['loss']:.3f}; "
              f"checkpoint {result.checkpoint_path}")


def _run_evaluate(args: argparse.Namespace) -> None:
    from chh_lib.devices import choose_device
    from chh_lib.evaluation import evaluate_run, format_results_table

    result = evaluate_run(
        args.run_dir, args.split, args.data, choose_device(args.device), True if args.sdr_inclusive else None,
        outlier_threshold_mm=args.outlier_mm,
    )
    print(format_results_table(result.metrics))
    print(f"run directory: {args.run_dir}  (tables in {result.output_dir})")


def _run_calibrate(args: argparse.Namespace) -> None:
    from chh_lib.devices import choose_device
    from chh_lib.evaluation import calibrate_run

    result = calibrate_run(args.run_dir, args.split, args.method, args.scope.replace("-", "_"), args.data,
                           choose_device(args.device), args.epochs, args.outlier_mm)
    temperatures = result.temperatures
    cross_validation = result.details.get("cross_validated_nll")
    if cross_validation:
        print(f"{cross_validation['num_folds']}-fold cross-validated NLL on split {result.split!r}: "
              + ", ".join(f"{scope.replace('_', '-')} {cross_validation[scope]:.4f}"
                          for scope in ("none", "global", "per_landmark"))
              + f" nats; lowest: {result.scope.replace('_', '-')}")
    if result.scope == "none":
        print(f"kept T = 1 for all {len(temperatures)} landmarks ({result.method}, none) on {result.num_images} "
              f"images of split {result.split!r}")
    else:
        print(f"fitted {len(temperatures)} temperatures ({result.method}, {result.scope.replace('_', '-')}) on "
              f"{result.num_images} images of "
              f"split {result.split!r}: min {temperatures.min():.3f}, median {np.median(temperatures):.3f}, "
              f"max {temperatures.max():.3f}")
    print(f"NLL {result.nll_before:.3f} -> {result.nll_after:.3f} nats; stored in {args.run_dir / 'checkpoints'}"
          f" and {args.run_dir / 'calibration.json'}")
    threshold = result.ere_threshold or {}
    if threshold.get("refused"):
        print(f"ERE threshold: {threshold['refused']}")
    elif threshold:
        print(f"ERE threshold {threshold['ere_threshold_mm']:.2f} mm: flags {threshold['target_tpr']:.0%} of the "
              f"{threshold['num_outliers']} outliers (error > {threshold['outlier_threshold_mm']:g} mm) of split "
              f"{threshold['split']!r}")


def _run_notebooks(args: argparse.Namespace) -> None:
    from chh_lib.notebooks import format_summary, run_notebooks

    only = [part.strip() for part in args.only.split(",") if part.strip()] if args.only else None
    summary = run_notebooks(args.run_dir, args.profile, only, data_dir=args.data, seed=args.seed,
                            device=args.device, parameters={"solutions": True} if args.solutions else None)
    print(format_summary(summary))
    print(f"executed notebooks and figures: {args.run_dir}")


def _run_predict(args: argparse.Namespace) -> int:
    from chh_lib.devices import choose_device
    from chh_lib.prediction import predict_images, write_prediction_csv

    spacing = args.pixel_size_mm
    if spacing is not None and len(spacing) not in (1, 2):
        raise ChhError(f"--pixel-size-mm takes one value or two (x y), got {len(spacing)}")
    if args.out.is_dir():
        raise ChhError(f"{args.out}: is a folder; --out names the CSV file to write")
    result = predict_images(
        args.run_dir, args.images, None if spacing is None else (spacing * 2)[:2], args.decode,
        choose_device(args.device), args.batch_size, "skip", args.heatmaps_dir, args.overlay_dir,
        progress=not args.no_progress, outlier_threshold_mm=args.outlier_mm,
    )
    for path, reason in result.skipped.items():
        print(f"chh predict: skipped {path}: {reason}", file=sys.stderr)
    if result.num_images == 0:
        raise ChhError(f"none of the {len(result.skipped)} images could be read; no CSV written")
    write_prediction_csv(result.table, args.out)
    table = result.table
    flagged = int(table["flagged"].fillna(False).sum()) if len(table) else 0
    state = "calibrated" if result.calibrated else "not calibrated (run chh calibrate for temperatures and flags)"
    print(f"predicted {len(table)} landmarks on {result.num_images} images ({result.decode}, {state}) in "
          f"{result.seconds:.1f} s ({result.num_images / max(result.seconds, 1e-9):.2f} images/s); "
          f"{flagged} flagged; wrote {args.out}")
    if result.skipped:
        print(f"chh predict: {len(result.skipped)} of {len(result.skipped) + result.num_images} images skipped",
              file=sys.stderr)
        return 1
    return 0


def _run_data_check(args: argparse.Namespace) -> int:
    from chh_lib.data.check import check_data, format_report

    report = check_data(args.data_dir, args.protocol)
    print(format_report(report))
    return 0 if report.ok else 1


def _run_pretrained(args: argparse.Namespace) -> None:
    from chh_lib.pretrained import write_pretrained_run

    path = write_pretrained_run(args.run_dir, args.data, args.checkpoint)
    print(f"wrote {path}; evaluate with: chh evaluate --run-dir {args.run_dir}" + ("" if args.data else " --data DATA_DIR"))


def _run_export(args: argparse.Namespace) -> None:
    from chh_lib.pretrained import export_slim_checkpoint

    notes = dict(note.split("=", 1) for note in args.note if "=" in note)
    path = export_slim_checkpoint(args.run_dir, args.out_path, notes)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _without_nproc(arguments: Sequence[str]) -> list[str]:
    """The command-line arguments without ``--nproc N`` (or ``--nproc=N``)."""
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--nproc":
            skip = True
        elif not argument.startswith("--nproc="):
            kept.append(argument)
    return kept


def _log_to_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chh`` console script; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    args.argv = arguments
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("papermill").setLevel(logging.WARNING)  # one line per notebook is enough
    handlers_before = list(logging.getLogger().handlers)
    try:
        return _run_command(args)
    finally:  # the run's log file belongs to this command only (main may run several in one process)
        for handler in [h for h in logging.getLogger().handlers if h not in handlers_before]:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _run_command(args: argparse.Namespace) -> int:
    """Run the chosen sub-command under its lock; errors become one line and exit status 2."""
    try:
        with _run_lock_for(args):
            status = args.handler(args)
    except ChhError as error:
        _log_error_to_files(f"chh {args.command}: error: {error}")
        print(f"chh {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"chh {args.command}: interrupted; completed checkpoints are kept", file=sys.stderr)
        return 130
    except OSError as error:
        if args.debug:
            raise
        _log_traceback_to_files(error)
        print(f"chh {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    return int(status or 0)


#: Commands that write into (or read a consistent state of) ``args.run_dir``; each takes its lock.
LOCKED_COMMANDS = ("train", "calibrate", "evaluate", "predict", "pretrained", "export", "notebooks")
#: Of those, the ones that may create the run directory.
_CREATING_COMMANDS = ("train", "pretrained", "notebooks")
#: Of those, the ones that only read the run directory (their outputs go elsewhere): they share its lock.
_READING_COMMANDS = ("predict", "export")


def _run_lock_for(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The run-directory lock this command must hold (a no-op for the rest).

    Shared for the commands that only read the run (:data:`_READING_COMMANDS`: two
    ``chh predict`` on one run go ahead together), exclusive for the others. In a
    multi-process training run rank 0 takes it; the process that only launches
    ``torchrun`` (``--nproc K``) does not.
    """
    from chh_lib.distributed import context_from_environment
    from chh_lib.runlock import run_lock

    run_dir = getattr(args, "run_dir", None)
    if args.command not in LOCKED_COMMANDS or run_dir is None:
        return contextlib.nullcontext()
    if args.command == "train":
        context = context_from_environment()
        if not context.is_main or (args.nproc > 1 and not context.enabled):
            return contextlib.nullcontext()
    if args.command not in _CREATING_COMMANDS and not Path(run_dir).is_dir():
        return contextlib.nullcontext()  # the command reports the missing run itself
    return run_lock(run_dir, command=" ".join(["chh", *args.argv]), shared=args.command in _READING_COMMANDS)


#: What to do about the operating-system errors a user can fix, by errno.
_OS_ERROR_ADVICE = {
    errno.ENOSPC: "free some disk space and run the command again (training: add --resume)",
    errno.EDQUOT: "free some of your disk quota and run the command again (training: add --resume)",
    errno.EROFS: "the file system is read-only; choose a writable --run-dir or output path",
    errno.EACCES: "you may not write or read there; check the permissions or choose another path",
    errno.EPERM: "you may not write or read there; check the permissions or choose another path",
    errno.ENOENT: "check that the path exists",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or use fewer DataLoader workers",
}


def describe_os_error(error: OSError) -> str:
    """One line for an operating-system error: the file, the problem, what to do; earlier files are kept."""
    where = error.filename if error.filename is not None else "a file"
    problem = error.strerror or str(error) or type(error).__name__
    advice = _OS_ERROR_ADVICE.get(error.errno, "check the path, the disk and the permissions")
    return f"{where}: {problem} (errno {error.errno}); {advice}. Files written before are kept."


def _log_error_to_files(message: str) -> None:
    """Put the one-line error into the log files of the run (e.g. ``train.log``) too."""
    record = logging.LogRecord("chh_lib.cli", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _log_traceback_to_files(error: OSError) -> None:
    """Put the traceback into the log files of the run (e.g. ``train.log``), not on the terminal."""
    record = logging.LogRecord("chh_lib.cli", logging.ERROR, __file__, 0, "operating-system error", None,
                               (type(error), error, error.__traceback__))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


if __name__ == "__main__":
    sys.exit(main())
