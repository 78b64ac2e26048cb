"""Mask Transfer and Transfer Ticket on the tiny detectors."""
from __future__ import annotations

import pytest
import torch

from compress.core.errors import ModelFileError
from compress.lottery.masks import MaskHolder, dense_mask, magnitude_prune
from compress.models.build import build_model
from compress.models.prunable import select_prunable
from compress.lottery.transfer import load_source, mask_transfer, transfer_ticket
from support.tiny_training import sgd, train_steps

BODY = "backbone.body."


def tiny_model(arch: str = "maskrcnn", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, "tiny", 3, min_size=64, max_size=64)


def classification_state(seed: int = 7) -> dict[str, torch.Tensor]:
    """A 'pretrained' classification body: ResNet names without the detector prefix, plus fc."""
    state = {k[len(BODY):]: v.clone() for k, v in tiny_model(seed=seed).state_dict().items()
             if k.startswith(BODY)}
    for name, value in state.items():
        if value.is_floating_point() and "running_var" not in name:
            value.add_(0.01 * (seed + 1))  # distinct from the target model everywhere
    state["fc.weight"] = torch.randn(10, 16)
    return state


def topk_positions(values: torch.Tensor, k: int) -> set[int]:
    return set(torch.topk(values.abs(), k).indices.tolist())


@pytest.mark.parametrize("distribution", ["global", "layerwise"])
def test_mask_transfer_keeps_exact_topk_of_source(distribution):
    torch.set_num_threads(1)
    model = tiny_model()
    fpn_before = model.state_dict()["backbone.fpn.layer_blocks.0.0.weight"].clone()
    source = classification_state()
    names = select_prunable(model, scope="backbone")
    mask = mask_transfer(model, source, names, 0.6, distribution)
    state = model.state_dict()
    flat = lambda d, keys: torch.cat([d[k].reshape(-1) for k in keys])  # noqa: E731
    groups = [names] if distribution == "global" else [[n] for n in names]
    for group in groups:
        src = flat(source, [n[len(BODY):] for n in group])
        keep = src.numel() - round(0.6 * src.numel())
        kept_positions = set(flat(mask, group).nonzero().squeeze(1).tolist())
        assert kept_positions == topk_positions(src, keep)
    for name in names:
        src = source[name[len(BODY):]]
        assert torch.equal(state[name][mask[name]], src[mask[name]])
        assert bool((state[name][~mask[name]] == 0).all())
    assert torch.equal(state[BODY + "bn1.running_mean"], source["bn1.running_mean"])
    assert torch.equal(state["backbone.fpn.layer_blocks.0.0.weight"], fpn_before)
    holder = MaskHolder(model, mask)
    counts = []
    train_steps(model, sgd(model), 2, after_each=lambda: counts.append(holder.check(model)))
    assert counts == [0, 0]
    holder.remove()


def test_mask_transfer_missing_or_misshaped_source_raises():
    model = tiny_model()
    names = select_prunable(model, scope="backbone")
    source = classification_state()
    with pytest.raises(ModelFileError, match="rpn.head.conv.0.0.weight"):
        mask_transfer(model, source, names + ["rpn.head.conv.0.0.weight"], 0.5)
    source["conv1.weight"] = torch.zeros(4, 3, 3, 3)
    with pytest.raises(ModelFileError, match="shape"):
        mask_transfer(model, source, names, 0.5)


def test_transfer_classification_ticket_zeros_stay_zero(tmp_path, caplog):
    torch.set_num_threads(1)
    source = classification_state()
    ticket_mask = magnitude_prune(source, {k: torch.ones_like(v, dtype=torch.bool) for k, v in
                                           source.items() if k.endswith("conv1.weight")
                                           or k.endswith("conv2.weight") or k == "fc.weight"},
                                  0.5, "global")
    torch.save({"model": source, "mask": ticket_mask}, tmp_path / "ticket.pt")
    state_in, mask_in = load_source(tmp_path / "ticket.pt")
    model = tiny_model()
    head_before = model.state_dict()["roi_heads.box_head.fc6.weight"].clone()
    mask, matched = transfer_ticket(model, state_in, mask_in)
    assert matched == [BODY + k for k in ticket_mask if k != "fc.weight"]
    assert "fc.weight" in caplog.text
    state = model.state_dict()
    for name in matched:
        src = source[name[len(BODY):]]
        assert torch.equal(mask[name], ticket_mask[name[len(BODY):]])
        assert torch.equal(state[name][mask[name]], src[mask[name]])
        assert int((state[name] == 0).sum()) == int((~mask[name]).sum())
    holder = MaskHolder(model, mask)
    optimizer = sgd(model)
    train_steps(model, optimizer, 3, after_each=holder.after_step)
    assert holder.check(model) == 0
    assert all(int((model.state_dict()[n][~mask[n]] != 0).sum()) == 0 for n in matched)
    assert not torch.equal(model.state_dict()["roi_heads.box_head.fc6.weight"], head_before)
    holder.remove()


def test_task_transfer_and_name_map():
    donor = tiny_model("maskrcnn", seed=3)
    names = select_prunable(donor)
    ticket_mask = magnitude_prune(donor.state_dict(), dense_mask(donor, names), 0.4, "global")
    target = tiny_model("keypointrcnn")
    mask, matched = transfer_ticket(target, donor.state_dict(), ticket_mask)
    assert matched == [n for n in names if "mask_" not in n]  # mask head: no match in keypoints
    assert all(torch.equal(mask[n], ticket_mask[n]) for n in matched)
    renamed = {"encoder." + k[len(BODY):]: v for k, v in ticket_mask.items() if k.startswith(BODY)}
    with pytest.raises(ModelFileError, match="name_map"):
        transfer_ticket(tiny_model(), {k: torch.zeros(1) for k in renamed}, renamed)
    values = {"encoder." + k[len(BODY):]: v for k, v in donor.state_dict().items()
              if k.startswith(BODY)}
    _, matched = transfer_ticket(tiny_model(), values, renamed, name_map={"encoder.": BODY})
    assert matched == [n for n in names if n.startswith(BODY)]


def test_load_source_rejects_garbage(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="bad.pt"):
        load_source(tmp_path / "bad.pt")
    torch.save({"model": {"x": 1}}, tmp_path / "empty.pt")
    with pytest.raises(ModelFileError, match="entry 'x' is int; expected parameter name -> tensor"):
        load_source(tmp_path / "empty.pt")
    torch.save({"model": {}}, tmp_path / "none.pt")
    with pytest.raises(ModelFileError, match="no tensors"):
        load_source(tmp_path / "none.pt")
