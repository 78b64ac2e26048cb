"""Models (tiny / ResNet-18 builds, one train step each), model files, checkpoints, LR schedule."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from support.recipes import LIGHT_HEADS
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.ops.misc import FrozenBatchNorm2d

from compress.core.checkpoint import load_checkpoint, save_checkpoint, state_digest
from compress.core.errors import ModelFileError
from compress.models.build import ARCH_TASK, build_model
from compress.models.heads import HeadConfig
from compress.training.schedule import build_scheduler, lr_lambda, parse_duration

ARCHS = ["fasterrcnn", "maskrcnn", "keypointrcnn"]


def make_sample(generator: torch.Generator, size: int = 64, image_id: int = 0):
    """A grey image with 1-2 filled rectangles and its target (boxes, labels, masks, keypoints)."""
    image = torch.full((3, size, size), 0.5)
    boxes, masks, keypoints = [], [], []
    for _ in range(int(torch.randint(1, 3, (1,), generator=generator))):
        x0, y0 = (int(v) for v in torch.randint(0, size // 2, (2,), generator=generator))
        w, h = (int(v) for v in torch.randint(size // 4, size // 2, (2,), generator=generator))
        image[:, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=generator)
        mask = torch.zeros(size, size, dtype=torch.uint8)
        mask[y0:y0 + h, x0:x0 + w] = 1
        points = torch.rand(17, 2, generator=generator) * torch.tensor([w - 1.0, h - 1.0]) + torch.tensor([x0, y0])
        boxes.append([x0, y0, x0 + w, y0 + h])
        masks.append(mask)
        keypoints.append(torch.cat([points, torch.full((17, 1), 2.0)], dim=1))
    boxes_t = torch.tensor(boxes, dtype=torch.float32)
    target = {
        "boxes": boxes_t, "labels": torch.ones(len(boxes), dtype=torch.int64), "image_id": image_id,
        "area": (boxes_t[:, 2] - boxes_t[:, 0]) * (boxes_t[:, 3] - boxes_t[:, 1]),
        "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
        "masks": torch.stack(masks), "keypoints": torch.stack(keypoints),
    }
    return image, target


def make_batch(seed: int = 0, batch: int = 2, size: int = 64):
    generator = torch.Generator().manual_seed(seed)
    samples = [make_sample(generator, size, image_id=i) for i in range(batch)]
    return tuple(zip(*samples))


@pytest.mark.parametrize("backbone", ["tiny", "resnet18"])
@pytest.mark.parametrize("arch", ARCHS)
def test_build_and_train_step(arch: str, backbone: str) -> None:
    torch.manual_seed(0)
    heads = LIGHT_HEADS if backbone == "resnet18" else None
    model = build_model(arch, backbone, num_classes=2, min_size=64, max_size=64, heads=heads)
    images, targets = make_batch()
    model.train()
    losses = model(list(images), list(targets))
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    expected |= {"maskrcnn": {"loss_mask"}, "keypointrcnn": {"loss_keypoint"}}.get(arch, set())
    assert set(losses) == expected
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grad = model.backbone.body.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert ARCH_TASK[arch] in ("detection", "segmentation", "keypoints")


@pytest.mark.parametrize("num_keypoints", [17, 5])
def test_keypointrcnn_outputs_keypoints(num_keypoints: int) -> None:
    torch.manual_seed(0)
    model = build_model("keypointrcnn", "tiny", 2, num_keypoints=num_keypoints, min_size=64, max_size=64)
    model.roi_heads.score_thresh = 0.0  # random weights: keep every detection so shapes are checked
    model.eval()
    images, _ = make_batch(batch=1)
    with torch.no_grad():
        (out,) = model(list(images))
    assert out["keypoints"].shape[0] > 0
    assert out["keypoints"].shape[1:] == (num_keypoints, 3)
    assert out["keypoints_scores"].shape[1:] == (num_keypoints,)


def test_tiny_backbone_layout() -> None:
    model = build_model("maskrcnn", "tiny", 3, min_size=64, max_size=64)
    names = dict(model.named_parameters())
    assert "backbone.body.conv1.weight" in names
    assert "backbone.body.layer2.0.downsample.0.weight" in names
    assert names["backbone.body.layer2.0.downsample.0.weight"].shape[2:] == (1, 1)
    assert "roi_heads.mask_predictor.conv5_mask.weight" in names
    assert "roi_heads.mask_predictor.mask_fcn_logits.weight" in names
    assert sum(p.numel() for p in model.parameters()) < 500_000


def test_norm_and_trainable_layers() -> None:
    frozen = build_model("fasterrcnn", "resnet18", 2, norm="frozen", trainable_layers=3, heads=LIGHT_HEADS)
    assert isinstance(frozen.backbone.body.bn1, FrozenBatchNorm2d)
    assert not frozen.backbone.body.conv1.weight.requires_grad
    assert not frozen.backbone.body.layer1[0].conv1.weight.requires_grad
    assert frozen.backbone.body.layer2[0].conv1.weight.requires_grad
    group = build_model("fasterrcnn", "tiny", 2, norm="group")
    assert isinstance(group.backbone.body.bn1, nn.GroupNorm)
    batch = build_model("fasterrcnn", "tiny", 2)
    assert isinstance(batch.backbone.body.bn1, nn.BatchNorm2d)
    assert all(p.requires_grad for p in batch.parameters())
    with pytest.raises(ValueError, match="norm"):
        build_model("fasterrcnn", "tiny", 2, norm="layer")


def test_heads_config_sizes() -> None:
    heads = HeadConfig(fpn_channels=32, representation_size=48, mask_head_layers=3, mask_head_channels=24)
    model = build_model("maskrcnn", "tiny", 4, heads=heads)
    assert model.backbone.out_channels == 32
    assert model.roi_heads.box_head.fc7.out_features == 48
    assert len(model.roi_heads.mask_head) == 3
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == heads.box_batch_size_per_image


def test_whole_model_weights(tmp_path: Path) -> None:
    source = build_model("maskrcnn", "tiny", 3)
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "wrapped.pt"
    torch.save(source.state_dict(), plain)
    save_checkpoint(wrapped, model=source.state_dict(), iteration=7)
    for path in (plain, wrapped):
        loaded = build_model("maskrcnn", "tiny", 3, weights_path=path)
        for key, value in source.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(ModelFileError, match=r"plain\.pt.*shape mismatch.*box_predictor"):
        build_model("maskrcnn", "tiny", 5, weights_path=plain)
    with pytest.raises(ModelFileError, match=r"missing keys.*mask"):
        build_model("maskrcnn", "tiny", 3, weights_path=_save(tmp_path / "f.pt", build_model("fasterrcnn", "tiny", 3)))


def _save(path: Path, model: nn.Module) -> Path:
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("norm", ["batch", "frozen"])
def test_backbone_weights_from_classifier(tmp_path: Path, norm: str) -> None:
    classifier = resnet18(weights=None, num_classes=10)
    with torch.no_grad():
        classifier.bn1.running_mean.uniform_()
    path = _save(tmp_path / "r18.pt", classifier)
    model = build_model("fasterrcnn", "resnet18", 2, norm=norm, backbone_weights_path=path, heads=LIGHT_HEADS)
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, classifier.conv1.weight)
    assert torch.equal(body.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)
    assert torch.equal(body.bn1.running_mean, classifier.bn1.running_mean)
    with pytest.raises(ModelFileError, match="r18.pt"):
        build_model("fasterrcnn", "resnet50", 2, backbone_weights_path=path)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = build_model("fasterrcnn", "tiny", 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(*[list(x) for x in make_batch()])["loss_classifier"].backward()
    optimizer.step()
    path = tmp_path / "ck" / "checkpoint.pt"
    checksum = save_checkpoint(path, model=model.state_dict(), optimizer=optimizer.state_dict(), iteration=3)
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 3 and loaded["checksum"] == checksum
    assert state_digest(loaded) == checksum
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)
    restored = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(loaded["optimizer"])
    assert [p.name for p in tmp_path.joinpath("ck").iterdir()] == ["checkpoint.pt"]  # no temp left


def test_checkpoint_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "good.pt"
    save_checkpoint(path, model={"w": torch.arange(10.0)}, epoch=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ModelFileError, match="truncated.pt.*truncated or corrupt"):
        load_checkpoint(truncated)
    with pytest.raises(ModelFileError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    tampered = tmp_path / "tampered.pt"
    payload = torch.load(path, weights_only=True)
    payload["model"]["w"][3] = 99.0
    torch.save(payload, tampered)
    with pytest.raises(ModelFileError, match="tampered.pt.*checksum mismatch"):
        load_checkpoint(tampered)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(ModelFileError, match="expected a dict"):
        load_checkpoint(listed)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": _Payload(marker)}, evil)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps({"x": _Payload(marker)}))
    for path in (evil, plain):
        with pytest.raises(ModelFileError) as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value) and path.name in str(info.value)
    assert not marker.exists()


def test_lr_lambda_values() -> None:
    fn = lr_lambda(warmup_iters=10, warmup_factor=0.1, steps=[20, 30], gamma=0.1)
    assert fn(0) == pytest.approx(0.1)
    assert fn(5) == pytest.approx(0.1 * 0.5 + 0.5)
    assert fn(10) == pytest.approx(1.0)
    assert fn(19) == pytest.approx(1.0)
    assert fn(20) == pytest.approx(0.1)
    assert fn(29) == pytest.approx(0.1)
    assert fn(30) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="increasing"):
        lr_lambda(steps=[30, 20])


def test_scheduler_steps_per_iteration() -> None:
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.02)
    scheduler = build_scheduler(optimizer, warmup_iters=4, warmup_factor=0.25, steps=[6], gamma=0.5)
    seen = []
    for _ in range(8):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.005, 0.00875, 0.0125, 0.01625, 0.02, 0.02, 0.01, 0.01]
    assert seen == pytest.approx(expected)


@pytest.mark.parametrize(("text", "iters"), [("500it", 500), ("1ep", 40), ("0.5ep", 20), (" 2.5 ep", 100),
                                              ("0it", 0), (12, 12), ("0.01ep", 0)])
def test_parse_duration(text, iters: int) -> None:
    assert parse_duration(text, iters_per_epoch=40) == iters


@pytest.mark.parametrize("text", ["500", "1 epoch", "-1ep", "1.5it", "ep", "", True])
def test_parse_duration_rejects(text) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text, iters_per_epoch=40)
