"""The engine on the tiny detector: steps, callbacks, logging, clipping, NaN, val loss, predict, seeds."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from compress.training.loop import NonFiniteLossError, predict, train_one_epoch, validation_loss
from compress.models.build import build_model
from compress.training.schedule import build_scheduler
from compress.core.seeding import seed_everything

SIZE = 64


def _sample(generator: torch.Generator, image_id: int):
    image = torch.full((3, SIZE, SIZE), 0.5)
    x0, y0 = (int(v) for v in torch.randint(0, SIZE // 2, (2,), generator=generator))
    w, h = (int(v) for v in torch.randint(SIZE // 4, SIZE // 2, (2,), generator=generator))
    image[:, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=generator)
    mask = torch.zeros(1, SIZE, SIZE, dtype=torch.uint8)
    mask[0, y0:y0 + h, x0:x0 + w] = 1
    box = torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32)
    return image, {"boxes": box, "labels": torch.tensor([1]), "masks": mask, "image_id": image_id}


def make_loader(batches: int = 3, batch: int = 2, seed: int = 0) -> list:
    """A list of (images, targets) batches, the shape a DataLoader with tuple(zip(*b)) yields."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for b in range(batches):
        samples = [_sample(generator, b * batch + i) for i in range(batch)]
        out.append(tuple(zip(*samples)))
    return out


def tiny(arch: str = "maskrcnn") -> nn.Module:
    return build_model(arch, "tiny", 2, min_size=SIZE, max_size=SIZE)


def _sgd(model: nn.Module, lr: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)


def test_three_iterations_callbacks_and_log() -> None:
    torch.manual_seed(0)
    model = tiny()
    optimizer = _sgd(model)
    scheduler = build_scheduler(optimizer, warmup_iters=2, warmup_factor=0.5)
    calls, records = [], []
    result = train_one_epoch(model, optimizer, make_loader(3), "cpu", scheduler=scheduler,
                             start_iteration=0, after_step=[calls.append], on_record=records.append,
                             log_every=2, progress=False)
    assert calls == [1, 2, 3]
    assert result["iterations"] == 3 and result["iteration"] == 3
    assert torch.isfinite(torch.tensor(result["loss"]))
    parts = sum(result[k] for k in ("loss_classifier", "loss_box_reg", "loss_objectness",
                                    "loss_rpn_box_reg", "loss_mask"))
    assert result["loss"] == pytest.approx(parts, rel=1e-5)
    assert [r["iteration"] for r in records] == [2, 3]
    assert records[0]["lr"] == pytest.approx(0.0075)  # step 2 runs at factor 0.5 + 0.5 * 0.5
    assert records[1]["lr"] == pytest.approx(0.01)  # warmup over after 2 steps
    assert {"loss", "loss_mask", "seconds_per_iter"} <= set(records[0])


def test_resume_counts_and_max_iterations() -> None:
    model = tiny("fasterrcnn")
    calls = []
    result = train_one_epoch(model, _sgd(model), make_loader(3), "cpu", start_iteration=10,
                             max_iterations=12, after_step=[calls.append], progress=False)
    assert calls == [11, 12]
    assert result["iterations"] == 2 and result["iteration"] == 12


def test_non_finite_loss_names_iteration() -> None:
    torch.manual_seed(0)
    model = tiny()

    def poison(iteration: int) -> None:
        if iteration == 1:
            with torch.no_grad():
                model.roi_heads.box_predictor.cls_score.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"iteration 2\b.*loss_classifier=nan") as info:
        train_one_epoch(model, _sgd(model), make_loader(3), "cpu", after_step=[poison], progress=False)
    assert info.value.iteration == 2


def test_grad_clip_bounds_the_update() -> None:
    torch.manual_seed(0)
    model = tiny()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=1.0)  # no momentum: update = lr * clipped grad
    train_one_epoch(model, optimizer, make_loader(1), "cpu", grad_clip=1e-3, progress=False)
    update = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(params, before)))
    assert 0 < float(update) <= 1e-3 * (1 + 1e-4)


def test_amp_on_cpu_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    model = tiny("fasterrcnn")
    with caplog.at_level(logging.WARNING):
        result = train_one_epoch(model, _sgd(model), make_loader(1), "cpu", amp=True, progress=False)
    assert result["iterations"] == 1
    assert "only on CUDA" in caplog.text


def test_validation_loss_leaves_model_and_rng_alone() -> None:
    torch.manual_seed(0)
    model = tiny()
    train_one_epoch(model, _sgd(model), make_loader(1), "cpu", progress=False)  # BN stats non-trivial
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    loader = make_loader(2, seed=5)
    first = validation_loss(model, loader, "cpu")
    second = validation_loss(model, loader, "cpu")
    assert first == second
    assert {"loss", "loss_mask", "loss_classifier"} <= set(first)
    assert not model.training and not model.backbone.body.bn1.training
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # running_mean / num_batches_tracked untouched


def test_predict_outputs_on_cpu_with_ids() -> None:
    model = tiny()
    model.train()
    results = predict(model, make_loader(2, batch=2), "cpu", progress=False)
    assert [image_id for image_id, _ in results] == [0, 1, 2, 3]
    for _, output in results:
        assert {"boxes", "scores", "labels", "masks"} <= set(output)
        assert output["boxes"].device.type == "cpu"
    assert model.training  # mode restored


def _train_seeded(seed: int) -> dict[str, torch.Tensor]:
    seed_everything(seed)
    model = tiny()
    train_one_epoch(model, _sgd(model), make_loader(2), "cpu", progress=False)
    return model.state_dict()


def test_seeded_runs_identical() -> None:
    first, second, other = _train_seeded(3), _train_seeded(3), _train_seeded(4)
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_on_cuda() -> None:
    seed_everything(0)
    model = tiny().to("cuda")
    optimizer = _sgd(model)
    scaler = torch.amp.GradScaler("cuda")
    calls: list[int] = []
    result = train_one_epoch(model, optimizer, make_loader(2), "cuda", amp=True, grad_clip=10.0,
                             scaler=scaler, after_step=[calls.append], progress=False)
    assert calls == [1, 2] and torch.isfinite(torch.tensor(result["loss"]))
    assert scaler.get_scale() > 0
    rng = torch.cuda.get_rng_state()
    assert validation_loss(model, make_loader(1), "cuda") == validation_loss(model, make_loader(1), "cuda")
    assert torch.equal(torch.cuda.get_rng_state(), rng)
    results = predict(model, make_loader(1), "cuda", progress=False)
    assert all(out["boxes"].device.type == "cpu" for _, out in results)


def test_validation_loss_empty_loader() -> None:
    with pytest.raises(ValueError, match="empty"):
        validation_loss(tiny(), [], "cpu")
