"""The export stage: ticket -> model.onnx + backbone.onnx (zeros verified, ORT parity),
sparse-initializer ONNX, compact archive and the size table; and `compress export`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from compress.core.atomic import write_json
from compress.core.errors import UserError
from compress.recipe.schema import Recipe
from compress.core.folders import RunFolder
from compress.run.loaded import LoadedModel, load_model
from compress.stages.base import StageContext
from compress.export.compact import pack, unpack_to
from compress.evaluate.runtimes.pipeline import deployment_intact
from compress.export.deploy.build import deploy_exported
from compress.export.onnx_export import check_opset, export_backbone, export_full
from compress.export.sizes import export_summary, format_size_table, size_table
from compress.export.sparse_initializers import to_sparse_initializers
from compress.export.verify import verify_full_parity, verify_parity, verify_zeros, write_verify

log = logging.getLogger(__name__)
PARITY_IMAGES = 3


def export_ticket(loaded: LoadedModel, out_dir: Path, *, opset: int | None = None,
                  images: list[torch.Tensor] | None = None,
                  deploy_images: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """Write and verify every export artifact into `out_dir`; return the summary block.

    `deploy_images` (e.g. validation images, where the ticket finds objects) are added to the
    parity images of the DeepSparse deployment in `out_dir/deploy`."""

    recipe, model, mask = loaded.recipe, loaded.model.eval(), loaded.mask
    opset = check_opset(opset if opset is not None else recipe.export.opset)
    size = recipe.image_size
    images = images or parity_images(size)
    out_dir.mkdir(parents=True, exist_ok=True)
    full, backbone = out_dir / "model.onnx", out_dir / "backbone.onnx"
    log.info("exporting %s (opset %d, %d px)", full, opset, size)
    export_full(model, full, image_size=size, opset=opset)
    export_backbone(model, backbone, image_size=size, opset=opset)
    backbone_mask = {n: m for n, m in mask.items() if n.startswith("backbone.")}
    checks = {"zeros_full": verify_zeros(full, model, mask),
              "zeros_backbone": verify_zeros(backbone, model, backbone_mask),
              "parity_full": verify_full_parity(full, model, images, image_size=size, opset=opset),
              "parity_backbone": verify_parity(backbone, model, images, kind="backbone")}
    write_verify(out_dir, checks)  # raises VerificationError when a check failed
    sparse = out_dir / "model.sparse.onnx"
    to_sparse_initializers(full, sparse)
    if recipe.export.compact:
        pack(full, out_dir / "model.lthz")
    table = size_table(full, sparse, out_dir / "model.lthz", mask)
    write_json(out_dir / "sizes.json", table)
    log.info("sizes:\n%s", format_size_table(table))
    deploy = deployment(model, full, out_dir / "deploy", size, [*(deploy_images or []), *images])
    return {**export_summary(table, checks), "deploy": deploy}


def deployment(model: torch.nn.Module, full: Path, out_dir: Path, size: int,
               images: list[torch.Tensor]) -> dict[str, Any]:
    """The partitioned DeepSparse deployment of the exported graph; its summary block."""
    manifest = deploy_exported(model, full, out_dir, canvas_size=size, images=images)
    if manifest.status != "ok":
        log.warning("deployment %s: %s", manifest.status,
                    manifest.reason or (manifest.parity or {}).get("reason"))
    return {"status": manifest.status, "parts": [p.name for p in manifest.parts],
            "parity": manifest.parity, "reason": manifest.reason}


def val_images(loaders: dict[str, Any], count: int = PARITY_IMAGES) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for images, _ in loaders.get("val") or []:
        out += list(images)[: count - len(out)]
        if len(out) >= count:
            break
    return out


def parity_images(size: int) -> list[torch.Tensor]:
    """Generated images with shapes on them (an untrained or weak model still sees objects)."""
    generator = torch.Generator().manual_seed(0)
    images = []
    for _ in range(PARITY_IMAGES):
        image = 0.5 + 0.05 * torch.randn(3, size, size, generator=generator)
        for _ in range(2):
            x0, y0 = torch.randint(0, size // 2, (2,), generator=generator).tolist()
            w, h = torch.randint(size // 5, size // 2, (2,), generator=generator).tolist()
            image[:, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=generator)
        images.append(image.clamp(0, 1))
    return images


class ExportStage:
    name = "export"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.export.enabled

    def done(self, run: RunFolder) -> bool:
        return ((run.export / "verify.json").is_file() and "export" in run.read_summary()
                and deployment_intact(run.export / "deploy"))

    def run(self, ctx: StageContext) -> dict[str, Any]:
        return export_ticket(ctx.loaded, ctx.run.export, deploy_images=val_images(ctx.loaders))


def export_command(source: Path | None, *, opset: int | None, out: Path | None,
                   archive: Path | None) -> None:
    """`compress export RUN_DIR|CHECKPOINT` or `compress export --unpack ARCHIVE`."""
    if archive is not None:
        target = out or archive.with_suffix(".onnx")
        unpack_to(archive, target)
        print(f"unpacked {archive} -> {target}")
        return
    if source is None:
        raise UserError("give a run folder or a checkpoint to export, or --unpack ARCHIVE",
                        key="SOURCE")
    loaded = load_model(source)
    out_dir = out or loaded.run.export
    summary = export_ticket(loaded, out_dir, opset=opset)
    if out is None:
        loaded.run.update_summary(export=summary)
    print(f"exported to {out_dir}: zeros preserved {summary['zeros_preserved']}, "
          f"max |diff| {summary['max_abs_diff']}, compact {summary['compact_bytes']} bytes")
