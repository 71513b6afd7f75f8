"""attach_masks / detach_masks: masks that hold in a plain user training loop."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pruners
from pruners import attach_masks, attached_masks, detach_masks


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )


def _masks(model: nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(p.shape, generator=gen) < 0.4
        for name, p in model.named_parameters()
        if name.endswith("weight") and p.dim() > 1
    } | {"6.bias": torch.tensor([True, False] * 5)}


def _user_loop(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 30) -> None:
    gen = torch.Generator().manual_seed(2)
    for _ in range(steps):
        x = torch.randn(16, 1, 8, 8, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _effective(model: nn.Module, name: str) -> torch.Tensor:
    module_name, _, param = name.rpartition(".")
    return getattr(model.get_submodule(module_name), param)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
    ],
    ids=["adamw-wd", "sgd-nesterov-wd", "adam-l2"],
)
def test_a_plain_user_loop_keeps_every_pruned_weight_exactly_zero(make_optimizer) -> None:  # type: ignore[no-untyped-def]
    model = _net()
    masks = _masks(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    attach_masks(model, masks)
    _user_loop(model, make_optimizer(model.parameters()))
    for name, mask in masks.items():
        weight = _effective(model, name)
        assert torch.all(weight[~mask] == 0), name
        assert not torch.equal(weight[mask], start[name][mask]), f"{name} never trained"
    detach_masks(model)
    params = dict(model.named_parameters())
    assert set(params) == set(start)  # plain parameters again, same names
    assert not any(name.endswith(("_orig", "_mask")) for name in model.state_dict())
    for name, mask in masks.items():
        assert isinstance(params[name], nn.Parameter)
        assert torch.all(params[name][~mask] == 0), name


def test_control_without_attached_masks_the_zeros_revive() -> None:
    """The loop above really would move zeroed weights (AdamW's update and decay do)."""
    model = _net()
    masks = _masks(model)
    pruners.apply_masks(model, masks)
    _user_loop(model, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1))
    params = dict(model.named_parameters())
    assert all(torch.any(params[n][~m] != 0) for n, m in masks.items())


def test_state_dict_round_trip_carries_masks_and_weights() -> None:
    model = _net()
    masks = _masks(model)
    attach_masks(model, masks)
    _user_loop(model, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1), steps=5)
    state = model.state_dict()
    assert {"0.weight_orig", "0.weight_mask", "6.bias_mask"} <= set(state)
    fresh = _net(seed=7)
    attach_masks(fresh, {n: torch.ones_like(m) for n, m in masks.items()})
    fresh.load_state_dict(state)
    for name, mask in attached_masks(fresh).items():
        assert torch.equal(mask, masks[name]), name
    x = torch.randn(3, 1, 8, 8)
    model.eval()
    fresh.eval()
    assert torch.equal(model(x), fresh(x))
    # and a detached model's state_dict loads into a plain model
    plain = _net(seed=9).eval()
    plain.load_state_dict(detach_masks(model).state_dict())
    assert torch.equal(plain(x), model(x))


def test_attached_masks_reads_back_and_detach_without_masks_is_a_no_op() -> None:
    model = _net()
    masks = _masks(model)
    before = copy.deepcopy(model.state_dict())
    detach_masks(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    attach_masks(model, masks)
    got = attached_masks(model)
    assert got.keys() == masks.keys()
    assert all(torch.equal(got[n], masks[n]) and got[n].dtype == torch.bool for n in masks)


def test_bad_masks_are_refused_and_nothing_is_attached() -> None:
    model = _net()
    with pytest.raises(ValueError, match="lacks"):
        attach_masks(
            model,
            {
                "0.weight": torch.ones(4, 1, 3, 3, dtype=torch.bool),
                "9.weight": torch.ones(1, dtype=torch.bool),
            },
        )
    with pytest.raises(ValueError, match="shape"):
        attach_masks(model, {"0.weight": torch.ones(4, 1, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool"):
        attach_masks(model, {"0.weight": torch.ones(4, 1, 3, 3)})
    assert attached_masks(model) == {}
    attach_masks(model, {"0.weight": torch.ones(4, 1, 3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="already has a mask attached"):
        attach_masks(model, {"0.weight": torch.ones(4, 1, 3, 3, dtype=torch.bool)})


def test_pruners_train_uses_attached_masks_and_returns_plain_parameters() -> None:
    data = pruners.load_dataset("digits")
    model = _net()
    masks = _masks(model)
    trained, _ = pruners.train(model, masks, data, pruners.TrainConfig(epochs=1, optimizer="adam"))
    params = dict(trained.named_parameters())
    assert set(params) == {n for n, _ in model.named_parameters()}
    assert attached_masks(trained) == {}
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0), name
