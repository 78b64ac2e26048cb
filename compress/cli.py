"""The `compress` command line. Exit codes: 0 success, 2 bad input (one line, no traceback),
1 internal error."""
from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path

import click

from compress.core.errors import UserError
from compress.run.checks import CheckFailed
from compress.evaluate.engines import BENCH_ENGINES, EVALUATE_ENGINES, PREDICT_ENGINES

log = logging.getLogger(__name__)

MAIN_HELP = """Find lottery tickets in torchvision R-CNN detectors and ship them.

\b
Examples:
  compress run recipes/maskrcnn_lth.yaml --smoke        # offline end-to-end run
  compress run recipes/maskrcnn_lth.yaml --set train.lr=0.01 --resume
  compress export runs/maskrcnn_r50_lth-1a2b3c4d
  compress evaluate --gt gt.json --results dt.json --iou-type bbox
  compress bench runs/NAME/export/backbone.onnx --engine deepsparse
  compress report runs/A runs/B
  compress profile recipes/maskrcnn_lth.yaml --smoke    # per-layer DeepSparse latency
  compress data synth --out data/synth --task keypoints --images 50
  compress runs                                          # list the run folders under runs/
"""


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("sparseml", "sparsezoo", "deepsparse", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.ERROR)
    logging.captureWarnings(True)  # library deprecation warnings: shown with --verbose only
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)


@click.group(help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.version_option(package_name="lth-compress")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    _setup_logging(quiet, verbose)
    ctx.obj = {"quiet": quiet, "progress": not quiet and sys.stderr.isatty()}


@cli.command(epilog="""\b
Examples:
  compress run recipes/maskrcnn_lth.yaml --smoke
  compress run recipes/keypointrcnn_lth.yaml --out runs/kp --set lottery.rounds=3
  compress run recipes/maskrcnn_lth.yaml --out runs/kp --resume
  compress run recipes/maskrcnn_lth.yaml --smoke --strict   # CI: a failed check exits 1""")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default runs/<name>-<recipe hash>).")
@click.option("--resume", is_flag=True, help="Skip finished stages and rounds; continue the rest.")
@click.option("--smoke", is_flag=True, help="Same recipe, offline: generated data, tiny budget.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a recipe key (validated like the file). Repeatable.")
@click.option("--strict", is_flag=True,
              help="Exit 1 at the end (after every file is written) if any check failed: the "
                   "run's `warnings:` block (parity, crashed engine, timed under load, target "
                   "not reached, partial transfer).")
@click.option("--refuse-loaded-profile", is_flag=True,
              help="lottery.distribution runtime: stop (exit 2) instead of using a latency "
                   "profile timed under load.")
@click.option("--force", is_flag=True,
              help="Write into an existing non-empty --out folder that holds no run.")
@click.pass_context
def run(ctx: click.Context, recipe: Path, out: Path | None, resume: bool, smoke: bool,
        overrides: tuple[str, ...], strict: bool, refuse_loaded_profile: bool,
        force: bool) -> None:
    """Train, find the lottery ticket, export, evaluate, benchmark and report."""
    from compress.run.pipeline import run_recipe
    from compress.run.checks import run_warnings

    folder = run_recipe(recipe, out=out, resume=resume, smoke=smoke, overrides=list(overrides),
                        progress=ctx.obj["progress"], refuse_loaded_profile=refuse_loaded_profile,
                        force=force)
    warnings = run_warnings(folder.read_summary())
    if strict and warnings:
        raise CheckFailed(f"--strict: {len(warnings)} check(s) failed (listed above; "
                          f"{folder.summary_path} `warnings`)")


@cli.command(epilog="""\b
Examples:
  compress export runs/maskrcnn_r50_lth-1a2b3c4d
  compress export runs/NAME/rounds/round_3/checkpoint.pt --opset 13 --out exported/
  compress export --unpack runs/NAME/export/model.lthz --out model.onnx""")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("--opset", type=int, default=None, help="ONNX opset (11-17, default from recipe: 17).")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (or file for --unpack).")
@click.option("--unpack", "archive", type=click.Path(dir_okay=False, path_type=Path),
              help="Unpack a compact sparse archive back to the byte-identical ONNX file.")
def export(source: Path | None, opset: int | None, out: Path | None, archive: Path | None) -> None:
    """Export a run's ticket (or a checkpoint) to ONNX with every zero kept, and verify it."""
    from compress.stages.export import export_command

    export_command(source, opset=opset, out=out, archive=archive)


@cli.command(epilog="""\b
Examples:
  compress evaluate --gt gt.json --results dt.json --iou-type segm --out eval/
  compress evaluate runs/NAME/ticket.pt --data runs/NAME/data --engine torch --tide
  compress evaluate runs/NAME/export/model.onnx --data runs/NAME/data --engine onnxruntime
  compress evaluate runs/NAME/export --data runs/NAME/data --engine deepsparse""")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), help="Dataset root (COCO, VOC or synthetic).")
@click.option("--engine", type=click.Choice(EVALUATE_ENGINES), default=None,
              help="torch (default for a ticket or checkpoint), onnxruntime (default for an ONNX "
                   "file) or deepsparse (the export folder's deployment, checked against ONNX Runtime).")
@click.option("--tide", is_flag=True, help="Also run TIDE error analysis.")
@click.option("--gt", type=click.Path(dir_okay=False, path_type=Path), help="COCO ground-truth JSON.")
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path),
              help="COCO results JSON to score (from any framework).")
@click.option("--iou-type", type=click.Choice(["bbox", "segm", "keypoints"]), default="bbox",
              show_default=True, help="With --results: which COCO metric to compute.")
@click.option("--convention", type=click.Choice(["coco", "detectron2"]), default=None,
              help="coco: pycocotools' loadRes as is (default with --results; the COCO server's "
                   "rule); detectron2: drop `bbox` from segm results so the mask area sets the "
                   "size range. Default for a model: the recipe's evaluate.convention.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default for a model: RUN/evaluate/<engine>-<dataset folder>/, "
                   "never the run's own eval/<engine>/; with --results: "
                   "nothing written but the printed table).")
def evaluate(model: Path | None, data: Path | None, engine: str | None, tide: bool, gt: Path | None,
             results: Path | None, iou_type: str, convention: str | None, out: Path | None) -> None:
    """COCO / VOC metrics for a model, or for a results file against a ground truth."""
    if gt or results:
        if not (gt and results):
            raise click.UsageError("--gt and --results go together")
        from compress.evaluate.metrics.results_file import evaluate_results_file, format_stats_table

        metrics = evaluate_results_file(gt, results, iou_type, out, convention or "coco")
        click.echo(format_stats_table(metrics))
        return
    if model is None or data is None:
        raise click.UsageError("give MODEL and --data, or --gt and --results")
    from compress.stages.evaluate import evaluate_command

    evaluate_command(model, data, engine=engine, tide=tide, out=out, convention=convention)


@cli.command(epilog="""\b
Examples:
  compress bench runs/NAME/export/model.onnx
  compress bench runs/NAME/export/backbone.onnx --engine deepsparse --batch 1 --batch 4
  compress bench runs/NAME/export                # the DeepSparse deployment end to end

\b
Exit 1 when no requested engine gave a figure (each failed or was skipped).""")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--engine", "engines", multiple=True,
              type=click.Choice(BENCH_ENGINES),
              help="Repeatable; default all three for an ONNX file (unavailable ones are skipped "
                   "with a reason); for an export folder deepsparse (the deployment) and "
                   "onnxruntime (the full graph on the same canvas).")
@click.option("--batch", "batches", multiple=True, type=click.IntRange(1, 1024),
              help="Batch size (images per timed call); repeatable; default 1.")
@click.option("--iterations", type=click.IntRange(1, 100000), default=20, show_default=True,
              help="Timed calls per engine and batch size.")
@click.option("--warmup", type=click.IntRange(0, 1000), default=5, show_default=True,
              help="Untimed calls first (compilation, caches).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="bench.json path (default: beside MODEL, or in the export folder); "
                   "machine.json goes beside it.")
def bench(model: Path, engines: tuple[str, ...], batches: tuple[int, ...], iterations: int,
          warmup: int, out: Path | None) -> None:
    """Latency and throughput of one ONNX file (or an export folder's deployment) on each runtime,
    like for like."""
    from compress.stages.bench import bench_command

    bench_command(model, engines=list(engines), batches=list(batches) or [1],
                  iterations=iterations, warmup=warmup, out=out)


@cli.command(epilog="""\b
Examples:
  compress profile recipes/maskrcnn_lth.yaml --smoke
  compress profile recipes/maskrcnn_lth.yaml --out profiles/r50_800.json""")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Profile JSON (default: the cache, $COMPRESS_PROFILE_DIR or "
                   "~/.cache/lth-compress/profiles). An existing file is resumed.")
@click.option("--smoke", is_flag=True, help="The recipe's smoke model and image size.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a recipe key (validated like the file). Repeatable.")
@click.option("--cores", type=click.IntRange(1, 4096), default=None,
              help="Cores DeepSparse runs on (default: the physical cores).")
@click.pass_context
def profile(ctx: click.Context, recipe: Path, out: Path | None, smoke: bool,
            overrides: tuple[str, ...], cores: int | None) -> None:
    """DeepSparse latency of every prunable layer at a grid of sparsities (for
    `lottery.distribution: runtime`)."""
    from compress.run.profile import format_profile, profile_recipe

    path, data = profile_recipe(recipe, out=out, smoke=smoke, overrides=list(overrides),
                                progress=ctx.obj["progress"], cores=cores)
    if not ctx.obj["quiet"]:
        click.echo(format_profile(data))
    click.echo(f"profile: {path}")


@cli.command(epilog="""\b
Examples:
  compress report runs/maskrcnn_r50_lth-1a2b3c4d
  compress report runs/imp runs/mask_transfer --out reports/compare""")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: the first run folder).")
def report(runs: tuple[Path, ...], out: Path | None) -> None:
    """One page (report.md + report.html with plots) for one or several runs."""
    from compress.report.build import report_command

    report_command(list(runs), out=out)


@cli.command(epilog="""\b
Examples:
  compress predict runs/NAME/export/model.onnx photos/ --out predictions/
  compress predict runs/NAME/ticket.pt image.png --engine torch --out pred/
  compress predict runs/NAME/export photos/ --engine deepsparse --out pred/""")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", type=click.Path(path_type=Path))
@click.option("--engine", type=click.Choice(PREDICT_ENGINES), default=None,
              help="For an export folder: deepsparse (the deployment, default) or onnxruntime "
                   "(the full graph on the same canvas).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for detections.json (COCO results format) and the annotated images.")
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Drop detections scoring below this.")
def predict(model: Path, images: Path, engine: str | None, out: Path, score_threshold: float) -> None:
    """Run a deployed model on your images; write annotated images and COCO-format detections."""
    from compress.stages.predict import predict_command

    predict_command(model, images, engine=engine, out=out, score_threshold=score_threshold)


@cli.command(epilog="""\b
Examples:
  compress runs
  compress runs experiments/""")
@click.argument("folder", required=False, default=Path("runs"),
                type=click.Path(file_okay=False, path_type=Path))
def runs(folder: Path) -> None:
    """List the run folders under FOLDER (default runs/): recipe, method, sparsity, bbox mAP, status."""
    from compress.run.listing import format_runs

    click.echo(format_runs(folder))


@cli.group()
def data() -> None:
    """Datasets: generate the built-in synthetic dataset."""


@data.command(epilog="""\b
Examples:
  compress data synth --out data/shapes --task segmentation --images 300
  compress data synth --out data/people --task keypoints --images 50 --seed 1
  compress data synth --out data/hard --task segmentation --difficulty hard""")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset root to write (images and COCO annotations).")
@click.option("--task", type=click.Choice(["detection", "segmentation", "keypoints"]),
              default="segmentation", show_default=True,
              help="detection: boxes; segmentation: boxes + masks; keypoints: stick-figure people.")
@click.option("--images", type=click.IntRange(1, 100000), default=200, show_default=True,
              help="Number of images to generate.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Random seed (the same seed writes the same dataset).")
@click.option("--image-size", type=click.IntRange(32, 2048), default=128, show_default=True,
              help="Side of the square images, in pixels.")
@click.option("--split", default=None,
              help="Write only this split (default: both train and val, a COCO root as is).")
@click.option("--val-images", type=click.IntRange(1, 100000), default=None,
              help="Val images when both splits are written (default: a quarter of --images, "
                   "at least 1).")
@click.option("--difficulty", type=click.Choice(["easy", "medium", "hard"]), default="easy", show_default=True,
              help="medium: 5 outline-only shape classes, 2-5 objects, light occlusion; hard: 8 "
                   "classes, crowds, occlusion, small objects, clutter (shapes; keypoints: easy or hard).")
def synth(out: Path, task: str, images: int, seed: int, image_size: int, split: str | None,
          val_images: int | None, difficulty: str) -> None:
    """Write a COCO-format dataset of simple shapes or stick-figure people (deterministic by seed)."""
    from compress.data.synth import write_synthetic, write_synthetic_splits

    if split is not None:
        ann = write_synthetic(out, task, images, seed=seed, image_size=image_size, split=split,
                              difficulty=difficulty)
        click.echo(f"wrote {images} images and {ann}")
        return
    val = val_images or max(1, images // 4)
    write_synthetic_splits(out, task, images, val, seed=seed, image_size=image_size,
                           difficulty=difficulty)
    click.echo(f"wrote {out}: train {images} / val {val} images; use it as data.dataset: coco, "
               f"data.root: {out}, data.train_split: train, data.val_split: val")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and map errors to exit codes."""
    try:
        cli.main(args=argv, prog_name="compress", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code or 0)
    except click.ClickException as err:  # usage errors: bad flag, missing argument
        click.echo(f"error: {err.format_message()}", err=True)
        return 2
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except UserError as err:
        click.echo(f"error: {err}", err=True)
        return 2
    except CheckFailed as err:  # the command's whole purpose failed (compress.run.checks)
        click.echo(f"error: {err}", err=True)
        return 1
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise_internal(err)
            return 1
        where = f"{err.filename}: " if err.filename else ""
        click.echo(f"error: {where}{os.strerror(err.errno)}; files already written are intact "
                   "(writes are atomic), free space or fix permissions and rerun with --resume", err=True)
        return 2
    except Exception as err:  # noqa: BLE001 - the last line of defence: internal error, exit 1
        raise_internal(err)
        return 1
    return 0


def raise_internal(err: BaseException) -> None:
    log.error("internal error", exc_info=err)


if __name__ == "__main__":
    sys.exit(main())
