"""The `compress` command line. Exit codes: 0 success, 2 bad input (one line, no traceback),
1 internal error."""
from __future__ import annotations

import errno
import logging
import os
import sys

import click

from compress.errors import UserError

log = logging.getLogger("compress")

MAIN_HELP = """Find lottery tickets in torchvision R-CNN detectors and ship them.

\b
Examples:
  compress run recipes/maskrcnn_lth.yaml --smoke        # offline end-to-end run
  compress run recipes/maskrcnn_lth.yaml --set train.lr=0.01 --resume
  compress export runs/maskrcnn_r50_lth-1a2b3c4d
  compress evaluate --gt gt.json --results dt.json --iou-type bbox
  compress bench runs/NAME/export/backbone.onnx --engine deepsparse
  compress report runs/A runs/B
  compress data synth --out data/synth --task keypoints --images 50
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and map errors to exit codes."""
    from compress import commands  # noqa: F401  (registers the subcommands)

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
