"""Optimisers: the scratch ones take torch.optim's steps, resume exactly, and every registered one
lowers a loss. Schedules: each follows its formula and resumes from a state dict."""

from __future__ import annotations

import copy
import io
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlzoo.config import OptimConfig, ScheduleConfig
from dlzoo.registry import OPTIMIZERS, SCHEDULES
from dlzoo.training.optim import Muon, build_optimizer, build_scheduler, orthogonalize

SCRATCH_TWINS = {
    "scratch_sgd": "sgd",
    "scratch_sgdm": "momentum",
    "scratch_adagrad": "adagrad",
    "scratch_rmsprop": "rmsprop",
    "scratch_adam": "adam",
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: with a second thread, OpenMP hand-offs cost more than the maths,
    20x more when the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    y = torch.randn(32, 1, generator=generator, dtype=torch.float64)
    return x, y


def train(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int):
    """Full-batch MSE steps through ``step(closure)``; returns the loss each closure reported."""

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        return loss

    return [optimizer.step(closure).item() for _ in range(steps)]


# ---------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------


FOREACH_TWINS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, foreach=True),
    "nesterov": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, foreach=True),
    "adagrad": lambda params: torch.optim.Adagrad(params, lr=0.05, eps=1e-8, foreach=True),
    "adam": lambda params: torch.optim.Adam(params, lr=0.05, foreach=True),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.05, weight_decay=0.0, foreach=True),
}


@pytest.mark.parametrize("name", sorted(FOREACH_TWINS))
def test_cpu_optimisers_take_torchs_fused_kernels_with_the_foreach_numbers(name: str) -> None:
    x, y = make_data()
    fused = make_model()
    fused_opt = build_optimizer(fused.parameters(), OptimConfig(name=name, lr=0.05))
    assert fused_opt.defaults["fused"] is True
    foreach = make_model()
    fused_losses = train(fused, fused_opt, x, y, steps=20)
    assert fused_losses == pytest.approx(
        train(foreach, FOREACH_TWINS[name](foreach.parameters()), x, y, steps=20)
    )
    for a, b in zip(fused.parameters(), foreach.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_optimisers_fall_back_to_foreach_where_there_is_no_fused_kernel() -> None:
    assert build_optimizer([nn.Parameter(torch.zeros(2))], OptimConfig(name="rmsprop")).defaults["foreach"]
    complex_param = nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    assert not build_optimizer([complex_param], OptimConfig(name="adam")).defaults["fused"]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("scratch_name", list(SCRATCH_TWINS))
def test_scratch_optimiser_follows_torch(scratch_name: str, weight_decay: float) -> None:
    x, y = make_data()
    models, losses = {}, {}
    for name in (scratch_name, SCRATCH_TWINS[scratch_name]):
        cfg = OptimConfig(name=name, lr=0.05, momentum=0.9, alpha=0.9, weight_decay=weight_decay)
        models[name] = make_model()
        optimizer = build_optimizer(models[name].parameters(), cfg)
        losses[name] = train(models[name], optimizer, x, y, steps=20)

    scratch, reference = models[scratch_name], models[SCRATCH_TWINS[scratch_name]]
    assert losses[scratch_name] == pytest.approx(losses[SCRATCH_TWINS[scratch_name]], rel=0, abs=1e-10)
    assert losses[scratch_name][-1] < losses[scratch_name][0]
    for mine, theirs in zip(scratch.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-9)


def optimiser_params(name: str, model: nn.Module) -> list:
    """The parameters as ``dlzoo train`` hands them to ``name``: for muon, the first layer's
    weight is the hidden matrix (a group flagged ``orthogonal``)."""
    if name != "muon":
        return list(model.parameters())
    hidden = model[0].weight
    return [
        {"params": [hidden], "orthogonal": True},
        {"params": [p for p in model.parameters() if p is not hidden]},
    ]


@pytest.mark.parametrize("name", [*SCRATCH_TWINS, "muon"])
def test_scratch_optimiser_resumes_exactly(name: str) -> None:
    x, y = make_data()
    cfg = OptimConfig(name=name, lr=0.05, muon_lr=0.05, weight_decay=0.01)
    model = make_model()
    optimizer = build_optimizer(optimiser_params(name, model), cfg)
    train(model, optimizer, x, y, steps=10)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, buffer)
    uninterrupted = train(model, optimizer, x, y, steps=10)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = make_model(seed=1)
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer = build_optimizer(optimiser_params(name, resumed_model), cfg)
    resumed_optimizer.load_state_dict(saved["optim"])
    assert train(resumed_model, resumed_optimizer, x, y, steps=10) == uninterrupted

    if name != "scratch_sgd":  # a stateful optimiser started afresh must differ, or the test proves nothing
        fresh_model = make_model(seed=1)
        fresh_model.load_state_dict(saved["model"])
        fresh_optimizer = build_optimizer(optimiser_params(name, fresh_model), cfg)
        assert train(fresh_model, fresh_optimizer, x, y, steps=10) != uninterrupted


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimiser_reduces_least_squares_loss(name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    y = x @ torch.tensor([[0.5], [-1.0], [0.25], [1.0]]) + 0.01 * torch.randn(64, 1, generator=generator)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = build_optimizer(model.parameters(), OptimConfig(name=name, lr=0.1))
    losses = train(model, optimizer, x, y, steps=60)
    assert losses[-1] < 0.2 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("shape", [(16, 48), (48, 16)])
def test_orthogonalize_sets_every_singular_value_near_one_and_keeps_the_singular_vectors(shape) -> None:
    generator = torch.Generator().manual_seed(0)
    rank = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], rank, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], rank, generator=generator, dtype=torch.float64))
    singular_values = torch.logspace(0, -2, rank, dtype=torch.float64)  # 1 down to 0.01
    result = orthogonalize(u @ torch.diag(singular_values) @ v.T)
    core = u.T @ result @ v  # diagonal if the singular vectors are kept: the new singular values
    torch.testing.assert_close(core, torch.diag(torch.diagonal(core)), rtol=0, atol=1e-12)
    assert torch.diagonal(core).min() > 0.65 and torch.diagonal(core).max() < 1.2  # from 100x apart


@pytest.mark.parametrize("fixed_norm", [False, True])
@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (3, 2, 2, 2)])
def test_muon_orthogonalises_the_nesterov_step_of_hidden_matrices_and_takes_sgds_on_the_rest(
    shape: tuple[int, ...], fixed_norm: bool
) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = nn.Parameter(3 * torch.randn(shape, generator=generator, dtype=torch.float64))
    bias = nn.Parameter(torch.randn(shape[0], generator=generator, dtype=torch.float64))
    groups = [{"params": [weight], "orthogonal": True, "lr": 0.1, "momentum": 0.5}, {"params": [bias]}]
    optimizer = Muon(groups, lr=0.05, momentum=0.9, weight_decay=0.01, fixed_norm=fixed_norm)
    twin_bias = nn.Parameter(bias.detach().clone())
    sgd = torch.optim.SGD([twin_bias], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    expected, velocity = weight.detach().clone(), torch.zeros(shape, dtype=torch.float64)
    rows = shape[0]
    scale = max(1.0, rows / (weight.numel() // rows)) ** 0.5  # (6, 4): sqrt(1.5); wide ones: 1
    for _ in range(3):
        weight.grad = torch.randn(shape, generator=generator, dtype=torch.float64)
        bias.grad = torch.randn(shape[0], generator=generator, dtype=torch.float64)
        twin_bias.grad = bias.grad.clone()
        velocity = 0.5 * velocity + weight.grad
        if fixed_norm:
            expected *= rows**0.5 / expected.norm()
        nesterov = (weight.grad + 0.5 * velocity).reshape(rows, -1)
        expected -= 0.1 * scale * orthogonalize(nesterov).view(shape)
        optimizer.step()
        sgd.step()
        torch.testing.assert_close(weight.detach(), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(bias, twin_bias, rtol=0, atol=1e-12)


def test_muon_with_fixed_norm_rescales_each_matrix_to_norm_sqrt_rows() -> None:
    weight = nn.Parameter(torch.full((4, 9), 5.0))
    optimizer = Muon([{"params": [weight], "orthogonal": True}], lr=0.1, fixed_norm=True)
    weight.grad = torch.zeros_like(weight)  # no update: only the rescaling moves it
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.full((4, 9), 1 / 3))  # norm 2 = sqrt(4 rows)


def test_muons_orthogonal_groups_take_no_weight_decay() -> None:
    model = make_model()
    cfg = OptimConfig(name="muon", lr=0.05, weight_decay=0.01)
    optimizer = build_optimizer(optimiser_params("muon", model), cfg)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.0, 0.01]
    with pytest.raises(ValueError, match="no weight decay"):
        Muon([{"params": [nn.Parameter(torch.zeros(2, 2))], "orthogonal": True, "weight_decay": 0.1}], lr=0.1)


def test_unknown_optimiser_suggests_the_closest_name() -> None:
    with pytest.raises(ValueError, match="Did you mean 'adam'"):
        build_optimizer(nn.Linear(2, 1).parameters(), OptimConfig(name="adma"))


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------

BASE_LR = 0.1


def make_scheduled(cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int, optimizer_name: str = "sgd"):
    param = nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([param], OptimConfig(name=optimizer_name, lr=BASE_LR))
    return optimizer, build_scheduler(optimizer, cfg, steps_per_epoch, total_steps)


def advance(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    """The lr of each of the next ``steps`` optimiser steps."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: only keeps the scheduler's step-order check content
        scheduler.step()
    return lrs


def lr_sequence(cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int, optimizer_name: str = "sgd"):
    """lrs[t] is the lr of optimiser step t, for t = 0 .. total_steps (the last one after the run)."""
    optimizer, scheduler = make_scheduled(cfg, steps_per_epoch, total_steps, optimizer_name)
    return advance(optimizer, scheduler, total_steps) + [optimizer.param_groups[0]["lr"]]


def test_constant_keeps_the_base_lr() -> None:
    assert lr_sequence(ScheduleConfig(name="constant"), 4, 12) == [BASE_LR] * 13


def test_exponential_decays_continuously_in_fractional_epochs() -> None:
    lrs = lr_sequence(ScheduleConfig(name="exponential", gamma=0.5, step_epochs=2), 4, 24)
    for step in (0, 1, 5, 8, 13, 24):
        epoch = step / 4
        assert lrs[step] == pytest.approx(BASE_LR * 0.5 ** (epoch / 2), rel=1e-12)


def test_exponential_staircase_floors_the_exponent() -> None:
    lrs = lr_sequence(ScheduleConfig(name="exponential", gamma=0.5, step_epochs=2, staircase=True), 4, 24)
    for step in (0, 1, 7, 8, 13, 16, 24):
        assert lrs[step] == pytest.approx(BASE_LR * 0.5 ** (step // 8), rel=1e-12)


def test_step_drops_by_gamma_every_step_epochs() -> None:
    lrs = lr_sequence(ScheduleConfig(name="step", gamma=0.5, step_epochs=1.5), 4, 18)  # every 6 steps
    assert lrs[:6] == pytest.approx([BASE_LR] * 6)
    assert lrs[6:12] == pytest.approx([BASE_LR / 2] * 6)
    assert lrs[12] == pytest.approx(BASE_LR / 4)


def test_step_is_exact_for_periods_that_are_not_binary_fractions() -> None:
    # A period of 0.2 epochs at 10 steps per epoch is 2 steps, but (6 / 10) / 0.2 = 2.9999999999999996.
    lrs = lr_sequence(ScheduleConfig(name="step", gamma=0.5, step_epochs=0.2), 10, 6)
    assert lrs[5] == pytest.approx(BASE_LR / 4)
    assert lrs[6] == pytest.approx(BASE_LR / 8)


def test_cosine_falls_from_base_to_min_lr() -> None:
    lrs = lr_sequence(ScheduleConfig(name="cosine", min_lr=0.01), 4, 20)
    assert lrs[0] == pytest.approx(BASE_LR)
    assert lrs[10] == pytest.approx((BASE_LR + 0.01) / 2)
    assert lrs[20] == pytest.approx(0.01)
    assert all(later < earlier for earlier, later in itertools.pairwise(lrs))


def test_warmup_rises_linearly_then_hands_over_to_the_schedule() -> None:
    lrs = lr_sequence(ScheduleConfig(name="cosine", warmup_epochs=1), 4, 20)
    assert lrs[:4] == pytest.approx([BASE_LR * k / 4 for k in (1, 2, 3, 4)])
    assert lrs[4] == pytest.approx(BASE_LR)
    assert lrs[12] == pytest.approx(BASE_LR / 2)  # half-way through the 16 cosine steps
    assert lrs[20] == pytest.approx(0.0, abs=1e-12)

    lrs = lr_sequence(ScheduleConfig(name="step", gamma=0.5, step_epochs=1, warmup_epochs=0.5), 4, 12)
    assert lrs[:2] == pytest.approx([BASE_LR / 2, BASE_LR])
    assert lrs[2:6] == pytest.approx([BASE_LR] * 4)
    assert lrs[6] == pytest.approx(BASE_LR / 2)


@pytest.mark.parametrize("name", ["onecycle", "triangle", "cyclic"])
def test_warmup_is_refused_by_schedules_with_their_own_ramp(name: str) -> None:
    with pytest.raises(ValueError, match="warmup_epochs"):
        make_scheduled(ScheduleConfig(name=name, warmup_epochs=1), 4, 20)


def test_onecycle_peaks_at_max_lr_after_pct_start() -> None:
    lrs = lr_sequence(ScheduleConfig(name="onecycle", max_lr=1.0, pct_start=0.3), 10, 100)
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert abs(peak - 30) <= 1
    assert lrs[peak] == pytest.approx(1.0)
    assert lrs[0] == pytest.approx(1.0 / 25)
    assert lrs[-1] < lrs[0]

    default_peak = max(lr_sequence(ScheduleConfig(name="onecycle", pct_start=0.3), 10, 100))
    assert default_peak == pytest.approx(10 * BASE_LR)


def test_onecycle_refuses_a_one_step_warmup_that_torch_would_divide_by_zero_on() -> None:
    # 0.25 of 4 steps (e.g. --set train.max_steps=4 with the default pct_start) was a ZeroDivisionError
    with pytest.raises(ValueError, match="one-step warm-up.*schedule.pct_start or the number of steps"):
        make_scheduled(ScheduleConfig(name="onecycle", pct_start=0.25), 4, 4)
    assert len(lr_sequence(ScheduleConfig(name="onecycle", pct_start=0.25), 4, 8)) == 9  # 2 steps: fine


@pytest.mark.parametrize("name", ["onecycle", "triangle", "cyclic"])
def test_a_parameter_group_at_k_times_the_lr_keeps_that_share_of_max_lr(name: str) -> None:
    groups = [
        {"params": [nn.Parameter(torch.zeros(1))]},
        {"params": [nn.Parameter(torch.zeros(1))], "lr": 64 * BASE_LR},
    ]
    optimizer = build_optimizer(groups, OptimConfig(name="momentum", lr=BASE_LR))
    cfg = ScheduleConfig(name=name, max_lr=1.0, min_lr=0.001 if name == "cyclic" else 0.0, cycle_epochs=2)
    scheduler = build_scheduler(optimizer, cfg, 10, 100)
    peaks = [0.0, 0.0]
    for _ in range(100):
        optimizer.step()
        scheduler.step()
        peaks = [max(peak, group["lr"]) for peak, group in zip(peaks, optimizer.param_groups, strict=True)]
    assert peaks[0] == pytest.approx(1.0, rel=1e-3)
    assert peaks[1] == pytest.approx(64.0, rel=1e-3)  # not max_lr for every group


def test_onecycle_cycles_momentum_only_where_the_optimiser_has_one() -> None:
    plain, _ = make_scheduled(ScheduleConfig(name="onecycle"), 4, 20, optimizer_name="sgd")
    assert plain.param_groups[0]["momentum"] == 0
    heavy_ball, _ = make_scheduled(ScheduleConfig(name="onecycle"), 4, 20, optimizer_name="momentum")
    assert heavy_ball.param_groups[0]["momentum"] == pytest.approx(0.95)


def test_triangle_rises_and_falls_in_straight_lines_and_leaves_momentum_alone() -> None:
    cfg = ScheduleConfig(name="triangle", max_lr=1.0, pct_start=0.25, start_factor=0.2, end_factor=0.05)
    optimizer, scheduler = make_scheduled(cfg, 10, 100, optimizer_name="momentum")
    lrs = advance(optimizer, scheduler, 100) + [optimizer.param_groups[0]["lr"]]
    assert lrs[0] == pytest.approx(0.2)
    assert lrs[10] == pytest.approx(0.2 + 0.8 * 10 / 25)
    assert lrs[25] == pytest.approx(1.0)
    assert lrs[25 + 30] == pytest.approx(1.0 - 0.95 * 30 / 75)
    assert lrs[100] == pytest.approx(0.05)
    assert optimizer.param_groups[0]["momentum"] == 0.9  # optim.momentum, not cycled


def test_cyclic_is_triangular() -> None:
    cfg = ScheduleConfig(name="cyclic", max_lr=1.0, cycle_epochs=2)  # 10 steps per cycle at 5 per epoch
    lrs = lr_sequence(cfg, 5, 20)
    for step in (0, 10, 20):
        assert lrs[step] == pytest.approx(BASE_LR)
    for step in (5, 15):
        assert lrs[step] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(BASE_LR + (1.0 - BASE_LR) * 2 / 5)
    assert lrs[7] == pytest.approx(BASE_LR + (1.0 - BASE_LR) * 3 / 5)

    lrs = lr_sequence(ScheduleConfig(name="cyclic", min_lr=0.01, cycle_epochs=2), 5, 10)
    assert (lrs[0], lrs[5], lrs[10]) == pytest.approx((0.01, 10 * BASE_LR, 0.01))


@pytest.mark.parametrize("optimizer_name", OPTIMIZERS.names())
@pytest.mark.parametrize("schedule", ["onecycle", "cyclic"])
def test_cycling_schedules_work_with_every_optimiser(schedule: str, optimizer_name: str) -> None:
    lrs = lr_sequence(ScheduleConfig(name=schedule, cycle_epochs=2, pct_start=0.5), 5, 10, optimizer_name)
    assert max(lrs) == pytest.approx(10 * BASE_LR)


RESUMABLE = {
    "constant": ScheduleConfig(name="constant", warmup_epochs=2.5),
    "step": ScheduleConfig(name="step", gamma=0.5, step_epochs=1, warmup_epochs=1),
    "exponential": ScheduleConfig(name="exponential", gamma=0.5, step_epochs=1, warmup_epochs=1),
    "cosine": ScheduleConfig(name="cosine", min_lr=0.001, warmup_epochs=1),
    "onecycle": ScheduleConfig(name="onecycle", pct_start=0.3),
    "triangle": ScheduleConfig(name="triangle", pct_start=0.3),
    "cyclic": ScheduleConfig(name="cyclic", cycle_epochs=1.5),
}


def test_every_schedule_has_a_resume_case() -> None:
    assert sorted(RESUMABLE) == SCHEDULES.names()


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_schedule_resumes_the_same_lr_sequence(name: str) -> None:
    cfg, steps_per_epoch, total_steps = RESUMABLE[name], 4, 20
    optimizer, scheduler = make_scheduled(cfg, steps_per_epoch, total_steps, "momentum")
    advance(optimizer, scheduler, 7)
    buffer = io.BytesIO()
    torch.save({"optim": optimizer.state_dict(), "schedule": scheduler.state_dict()}, buffer)
    uninterrupted = advance(optimizer, scheduler, 13)
    assert len(set(uninterrupted)) > 1  # the lr moves, so a lost step counter would show

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    optimizer, scheduler = make_scheduled(copy.deepcopy(cfg), steps_per_epoch, total_steps, "momentum")
    optimizer.load_state_dict(saved["optim"])
    scheduler.load_state_dict(saved["schedule"])
    assert advance(optimizer, scheduler, 13) == uninterrupted


def test_unknown_schedule_suggests_the_closest_name() -> None:
    param = nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([param], OptimConfig(name="sgd"))
    with pytest.raises(ValueError, match="Did you mean 'cosine'"):
        build_scheduler(optimizer, ScheduleConfig(name="cosin"), 4, 20)


# --- lookahead ------------------------------------------------------------------------------------


def test_lookahead_moves_the_slow_weights_alpha_of_the_way_every_k_steps() -> None:
    param = nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(
        [param], OptimConfig(name="sgd", lr=1.0, lookahead_steps=2, lookahead_alpha=0.5)
    )
    seen = []
    for _ in range(4):  # the gradient is always 1, so each plain step moves the weight by -1
        optimizer.zero_grad()
        param.sum().backward()
        optimizer.step()
        seen.append(param.item())
    # step 1: -1 (the slow weights start here); step 2: fast -2, synced to -1 + 0.5 * (-2 + 1) = -1.5;
    # step 3: -2.5; step 4: fast -3.5, synced to -1.5 + 0.5 * (-3.5 + 1.5) = -2.5
    assert seen == [-1.0, -1.5, -2.5, -2.5]


@pytest.mark.parametrize("name", ["nesterov", "adam", "scratch_adam"])
def test_lookahead_resumes_from_the_optimiser_state_dict_exactly(name: str) -> None:
    cfg = OptimConfig(name=name, lr=0.05, lookahead_steps=3, lookahead_alpha=0.4)
    x, y = make_data()
    whole = make_model()
    whole_opt = build_optimizer(whole.parameters(), cfg)
    train(whole, whole_opt, x, y, steps=8)

    first = make_model()
    first_opt = build_optimizer(first.parameters(), cfg)
    train(first, first_opt, x, y, steps=4)  # stops between two syncs
    saved = copy.deepcopy(first_opt.state_dict())
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    resumed = make_model()
    resumed.load_state_dict(first.state_dict())
    resumed_opt = build_optimizer(resumed.parameters(), cfg)
    resumed_opt.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    train(resumed, resumed_opt, x, y, steps=4)
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    plain = make_model()
    train(plain, build_optimizer(plain.parameters(), OptimConfig(name=name, lr=0.05)), x, y, steps=8)
    assert not all(torch.equal(a, b) for a, b in zip(whole.parameters(), plain.parameters(), strict=True))


def test_ramped_lookahead_averages_more_towards_the_end_and_ends_on_the_slow_weights() -> None:
    param = nn.Parameter(torch.zeros(1))
    cfg = OptimConfig(name="sgd", lr=1.0, lookahead_steps=2, lookahead_alpha=0.2, lookahead_ramp=True)
    optimizer = build_optimizer([param], cfg, total_steps=5)
    seen = []
    for _ in range(5):  # the gradient is always 1: each plain step moves the weight by -1
        optimizer.zero_grad()
        param.sum().backward()
        optimizer.step()
        seen.append(param.item())
    # alpha after step t is 1 - 0.8 * (t / 5) ** 3. Step 1: -1, the slow weights start here.
    # Step 2 syncs at alpha 0.9488: -1 + 0.9488 * (-2 + 1). Step 4 syncs at alpha 0.5904.
    # Step 5, the last, syncs too, at alpha 0.2, so the run ends on the slow weights.
    alpha2, alpha4 = 1 - 0.8 * 0.4**3, 1 - 0.8 * 0.8**3
    after2 = -1 - alpha2
    after4 = after2 + alpha4 * (after2 - 2 - after2)
    after5 = after4 + 0.2 * (after4 - 1 - after4)
    assert seen == pytest.approx([-1.0, after2, after2 - 1, after4, after5])
    with pytest.raises(ValueError, match="optim.lookahead_ramp needs the run's total steps"):
        build_optimizer([param], cfg)


def test_lookahead_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"optim.lookahead_alpha must be in \(0, 1\], got 1.5"):
        OptimConfig(lookahead_alpha=1.5)
    with pytest.raises(ValueError, match=r"optim.lookahead_steps must be >= 0 \(0 = off\), got -1"):
        OptimConfig(lookahead_steps=-1)
