"""Optimisers and learning-rate schedules: the update rules of the notes, written out.

An optimiser turns a gradient ``g`` into a step for the parameters ``p``. Read the
``Scratch*`` classes in order; each adds one idea to the one before:

- SGD steps against the gradient: ``p -= lr * g``.
- Momentum keeps a velocity, so directions the gradient keeps pointing in gather
  speed and directions where it flips sign cancel: ``v = mu * v + g; p -= lr * v``.
- Adagrad gives every coordinate its own step size, divided by the root of the sum
  of its squared gradients so far: rarely-updated coordinates keep large steps.
- RMSProp swaps Adagrad's ever-growing sum for a decaying average, so the steps do
  not shrink to nothing on a long run.
- Adam is momentum on top of RMSProp, with a correction for both averages starting
  at zero.
- Muon is Nesterov momentum for weight matrices whose update is orthogonalised (all
  its singular values set to about 1) before it is taken.

Every ``Scratch*`` class matches its ``torch.optim`` counterpart to float precision
(``tests/test_optim.py`` checks it step by step) and keeps its running averages in
``self.state``, so ``state_dict()`` / ``load_state_dict()`` resume a run exactly. For
real runs the registered ``torch.optim`` ones compute the same numbers faster.

A learning-rate schedule maps the optimiser step to a learning rate. Every schedule
here is stepped once per optimiser step, so the "epoch" in its formula is
``step / steps_per_epoch`` and may be fractional; the base lr is the optimiser's lr.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import CyclicLR, LambdaLR, LRScheduler, OneCycleLR
from torch.optim.optimizer import Optimizer, ParamsT

from dlzoo.config import OptimConfig, ScheduleConfig
from dlzoo.registry import OPTIMIZERS, SCHEDULES

# ---------------------------------------------------------------------------
# Optimisers written from scratch
# ---------------------------------------------------------------------------


class ScratchOptimizer(torch.optim.Optimizer):
    """The loop every scratch optimiser shares; subclasses write only ``update``, their rule.

    For each parameter with a gradient, ``step`` adds L2 weight decay to the gradient,
    ``g = grad + weight_decay * p`` (the gradient of ``weight_decay / 2 * ||p||^2``, as
    ``torch.optim`` does for all but AdamW), then calls ``update(p, g, state, group)``.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter once; ``closure`` (if given) recomputes the loss and gradients
        first, and its loss is returned."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"] != 0:
                    grad = grad + group["weight_decay"] * param
                self.update(param, grad, self.state[param], group)
        return loss

    def update(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        """Change ``param`` in place; keep anything that must survive a resume in ``state``."""
        raise NotImplementedError


class ScratchSGD(ScratchOptimizer):
    """Stochastic gradient descent (``torch.optim.SGD`` with momentum 0)::

        g = grad + weight_decay * p
        p = p - lr * g

    On a mini-batch, ``grad`` is a noisy estimate of the full gradient: that noise is the "stochastic".
    """

    def __init__(self, params: ParamsT, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    def update(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        param.sub_(group["lr"] * grad)


def velocity(grad: torch.Tensor, state: dict[str, Any], momentum: float) -> torch.Tensor:
    """``v = momentum * v + grad``, kept in ``state["velocity"]`` (zero before the first step)."""
    if not state:
        state["velocity"] = torch.zeros_like(grad)
    return state["velocity"].mul_(momentum).add_(grad)


class ScratchSGDM(ScratchOptimizer):
    """SGD with (heavy-ball) momentum, in torch's convention (``torch.optim.SGD``, dampening 0)::

        g = grad + weight_decay * p
        v = momentum * v + g          # v starts at 0
        p = p - lr * v

    The textbook form ``v = mu * v - lr * g; p = p + v`` takes the same steps while lr is
    constant; torch's form keeps lr out of ``v``, so a schedule changes the step at once.
    """

    def __init__(self, params: ParamsT, lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def update(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        param.sub_(group["lr"] * velocity(grad, state, group["momentum"]))


class ScratchAdagrad(ScratchOptimizer):
    """Adagrad (Duchi et al. 2011), in torch's convention (``torch.optim.Adagrad``)::

        g = grad + weight_decay * p
        s = s + g^2                   # per coordinate; s starts at 0
        p = p - lr * g / (sqrt(s) + eps)

    ``s`` only grows, so every coordinate's step size only shrinks, fastest where gradients are large.
    """

    def __init__(self, params: ParamsT, lr: float, eps: float = 1e-10, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "eps": eps, "weight_decay": weight_decay})

    def update(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        if not state:
            state["sum_of_squares"] = torch.zeros_like(param)
        sum_of_squares = state["sum_of_squares"]
        sum_of_squares.addcmul_(grad, grad)
        param.sub_(group["lr"] * grad / (sum_of_squares.sqrt() + group["eps"]))


class ScratchRMSProp(ScratchOptimizer):
    """RMSProp (Hinton, lecture 6e), in torch's convention (``torch.optim.RMSprop``, no momentum)::

        g = grad + weight_decay * p
        v = alpha * v + (1 - alpha) * g^2     # v starts at 0
        p = p - lr * g / (sqrt(v) + eps)

    ``v`` remembers about the last ``1 / (1 - alpha)`` steps (100 for alpha = 0.99), not all of them.
    """

    def __init__(
        self, params: ParamsT, lr: float, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay})

    def update(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        if not state:
            state["mean_square"] = torch.zeros_like(param)
        mean_square = state["mean_square"]
        alpha = group["alpha"]
        mean_square.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        param.sub_(group["lr"] * grad / (mean_square.sqrt() + group["eps"]))


class ScratchAdam(ScratchOptimizer):
    """Adam (Kingma & Ba 2015) with L2 weight decay in the gradient (``torch.optim.Adam``)::

        g = grad + weight_decay * p
        t = t + 1
        m = beta1 * m + (1 - beta1) * g       # momentum: mean of g; m, v start at 0
        v = beta2 * v + (1 - beta2) * g^2     # RMSProp: mean of g^2
        m_hat = m / (1 - beta1^t)             # undo the pull towards the zero start
        v_hat = v / (1 - beta2^t)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    Without the correction the first steps would be far too small: ``m`` after one step is
    ``(1 - beta1) * g``, a tenth of the gradient for beta1 = 0.9.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def update(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        if not state:
            state["step"] = 0
            state["mean"] = torch.zeros_like(param)
            state["mean_square"] = torch.zeros_like(param)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        mean, mean_square = state["mean"], state["mean_square"]
        mean.mul_(beta1).add_(grad, alpha=1 - beta1)
        mean_square.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        mean_hat = mean / (1 - beta1 ** state["step"])
        mean_square_hat = mean_square / (1 - beta2 ** state["step"])
        param.sub_(group["lr"] * mean_hat / (mean_square_hat.sqrt() + group["eps"]))


NEWTON_SCHULZ_STEPS = 5
"""Iterations of ``orthogonalize`` (Muon's default)."""
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""Jordan's quintic: pushes singular values in (0, 1] quickly to about 1, not exactly (values 100x
apart end between 0.68 and 1.13: tests/test_optim.py)."""


def orthogonalize(matrix: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS) -> torch.Tensor:
    """The semi-orthogonal matrix nearest ``matrix`` (m, n), approximately: ``U V^T`` of its
    SVD ``U S V^T``, all singular values replaced by about 1, by a Newton-Schulz iteration
    (matrix products only, so cheap next to the SVD)."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix / (matrix.norm() + 1e-7)  # singular values now at most 1
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T  # iterate on the wide side: x @ x.T is the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T  # (m, m)
        x = a * x + (b * gram + c * gram @ gram) @ x  # an odd quintic in x's singular values
    return x.T if tall else x


def _as_groups(params: ParamsT) -> list[dict[str, Any]]:
    """``params`` as a list of parameter-group dicts (copies): a plain list of tensors is one group."""
    params = list(params)
    if params and isinstance(params[0], dict):
        return [dict(group) for group in params]
    return [{"params": params}]


class Muon(ScratchOptimizer):
    """Muon (Jordan et al. 2024, "MomentUm Orthogonalized by Newton-schulz"): for each weight
    matrix, Nesterov momentum whose update is orthogonalised before it is taken::

        v = momentum * v + grad
        g = grad + momentum * v                 # Nesterov: the gradient a step ahead
        p = p - lr * orthogonalize(g) * sqrt(max(1, rows / columns))

    A conv filter bank (out, in, kh, kw) is the matrix (out, in * kh * kw). Orthogonalising
    gives every direction of the update the same size, so the rare directions that plain
    momentum would barely move learn as fast as the dominant ones. Only the hidden matrices of
    the network take this rule (parameter groups flagged ``orthogonal``); the biases,
    batch-norm shifts and the classifier head, where it does not apply, take Nesterov SGD
    with L2 weight decay (``torch.optim.SGD(nesterov=True)``'s rule).

    The orthogonal groups take no weight decay: an L2 term in the gradient would be
    orthogonalised with it. With ``fixed_norm`` instead (airbench94_muon's choice for convs
    followed by batch norm, which makes their scale irrelevant) each matrix is rescaled to
    Frobenius norm ``sqrt(rows)`` before every update, so that the update's relative size, and
    with it the effective lr, does not shrink as the weights grow.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        fixed_norm: bool = False,
    ) -> None:
        groups = _as_groups(params)
        for group in groups:
            if group.get("orthogonal") and group.setdefault("weight_decay", 0.0):
                raise ValueError("Muon's orthogonal groups take no weight decay; use fixed_norm")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "orthogonal": False}
        super().__init__(groups, {**defaults, "fixed_norm": fixed_norm})

    def update(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        step = grad.add(velocity(grad, state, group["momentum"]), alpha=group["momentum"])  # Nesterov
        if not group["orthogonal"] or param.dim() < 2:
            param.sub_(group["lr"] * step)
            return
        rows = len(param)
        matrix = step.reshape(rows, -1)
        if group["fixed_norm"]:
            param.mul_(rows**0.5 / param.norm())
        scale = max(1.0, rows / matrix.shape[1]) ** 0.5  # a tall matrix's update keeps its rms size
        param.sub_(orthogonalize(matrix).view_as(param), alpha=group["lr"] * scale)


# ---------------------------------------------------------------------------
# Registered optimisers: (params, OptimConfig) -> Optimizer
# ---------------------------------------------------------------------------


FUSED_DEVICES = ("cpu", "cuda")
"""Devices where torch has fused SGD, Adam and AdamW kernels (Adagrad's: the CPU only)."""


def _fastest(
    make: Callable[..., Optimizer], params: ParamsT, devices: tuple[str, ...] = FUSED_DEVICES, **settings: Any
) -> Optimizer:
    """``make(params, **settings)`` with torch's fused kernels (one kernel does a parameter's
    whole update) where the parameters' device has them (``devices``), else with its ``foreach``
    kernels (one op per step of the rule, over all parameters at once). On a CPU the fused step
    is several times faster and makes no temporaries the size of the parameters; the two agree
    to float rounding.
    """
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    # torch checks this only at the first step; build the optimiser after moving the model
    fused = all(p.is_floating_point() and p.device.type in devices for p in tensors)
    return make(params, **({"fused": True} if fused else {"foreach": True}), **settings)


@OPTIMIZERS.register("sgd")
def sgd(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Plain SGD, no momentum."""
    return _fastest(torch.optim.SGD, params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("momentum")
def momentum(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with heavy-ball momentum ``cfg.momentum``."""
    return _fastest(torch.optim.SGD, params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("nesterov")
def nesterov(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum ``cfg.momentum``: the gradient is taken a step ahead."""
    return _fastest(
        torch.optim.SGD,
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
        weight_decay=cfg.weight_decay,
    )


@OPTIMIZERS.register("adagrad")
def adagrad(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    return _fastest(
        torch.optim.Adagrad, params, ("cpu",), lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay
    )


@OPTIMIZERS.register("rmsprop")
def rmsprop(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    """RMSprop with decay ``cfg.alpha`` and no momentum."""
    return torch.optim.RMSprop(  # no fused kernel in torch
        params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, weight_decay=cfg.weight_decay, foreach=True
    )


def _adam_settings(cfg: OptimConfig) -> dict[str, Any]:
    return {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps, "weight_decay": cfg.weight_decay}


@OPTIMIZERS.register("adam")
def adam(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam; ``cfg.weight_decay`` is an L2 term added to the gradient."""
    return _fastest(torch.optim.Adam, params, **_adam_settings(cfg))


@OPTIMIZERS.register("adamw")
def adamw(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019): weight decay shrinks the weights directly,
    ``p -= lr * weight_decay * p``, instead of passing through Adam's normalisation."""
    return _fastest(torch.optim.AdamW, params, **_adam_settings(cfg))


@OPTIMIZERS.register("scratch_sgd")
def scratch_sgd(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    return ScratchSGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("scratch_sgdm")
def scratch_sgdm(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    return ScratchSGDM(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("scratch_adagrad")
def scratch_adagrad(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    return ScratchAdagrad(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("scratch_rmsprop")
def scratch_rmsprop(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    return ScratchRMSProp(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("scratch_adam")
def scratch_adam(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    return ScratchAdam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("muon")
def muon(params: ParamsT, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Muon on the groups flagged ``orthogonal`` (at ``cfg.muon_lr`` and ``cfg.muon_momentum``,
    no weight decay), Nesterov SGD at ``cfg.lr`` and ``cfg.momentum`` on the others. The
    onecycle schedule cycles every group's momentum, the orthogonal groups' too."""
    groups = _as_groups(params)
    for group in groups:
        if group.get("orthogonal"):
            share = group.get("lr", cfg.lr) / cfg.lr  # model.features_lr_mult, say
            group.update(lr=cfg.muon_lr * share, momentum=cfg.muon_momentum)
    settings = {"momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "fixed_norm": cfg.muon_fixed_norm}
    return Muon(groups, lr=cfg.lr, **settings)


def build_optimizer(params: ParamsT, cfg: OptimConfig, total_steps: int = 0) -> torch.optim.Optimizer:
    """The optimiser ``cfg.name`` over ``params`` (with lookahead if ``cfg.lookahead_steps``;
    a ramped lookahead needs the run's ``total_steps``); an unknown name raises ``ValueError``."""
    optimizer = OPTIMIZERS.get(cfg.name)(params, cfg)
    if cfg.lookahead_steps:
        if cfg.lookahead_ramp and total_steps < 1:
            raise ValueError("optim.lookahead_ramp needs the run's total steps: pass total_steps")
        ramp_steps = total_steps if cfg.lookahead_ramp else 0
        add_lookahead(optimizer, cfg.lookahead_steps, cfg.lookahead_alpha, ramp_steps)
    return optimizer


LOOKAHEAD_SLOW = "lookahead_slow"
"""Key of a parameter's slow weights in the optimiser's state."""
LOOKAHEAD_COUNT = "lookahead_count"
"""Key of the steps taken, kept in each parameter group."""


def add_lookahead(optimizer: torch.optim.Optimizer, steps: int, alpha: float, ramp_steps: int = 0) -> None:
    """Lookahead (Zhang et al. 2019) around ``optimizer``: it trains the "fast" weights as usual,
    and every ``steps`` steps the slow weights move ``alpha`` of the way towards them and the
    fast weights restart from there: ``slow += alpha * (fast - slow); fast = slow``. The slow
    weights start at the weights after the first step.

    With ``ramp_steps`` (the run's length) alpha is not fixed but falls on a cubic from 1 (no
    averaging) at step 0 to ``alpha`` at step ``ramp_steps``, which also syncs, so the run ends on
    the slow weights: an average of the last few hundred steps' weights, as airbench94's.

    The slow weights live in ``optimizer.state`` and the step count in each parameter group, so
    the optimiser's ``state_dict()`` carries them and a resumed run continues exactly.
    """

    @torch.no_grad()
    def after_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in opt.param_groups:
            group[LOOKAHEAD_COUNT] = count = group.get(LOOKAHEAD_COUNT, 0) + 1
            sync = count % steps == 0 or count == ramp_steps
            if count > 1 and not sync:
                continue  # neither the first step nor a sync: nothing to touch
            weight = alpha
            if ramp_steps:
                weight = 1 - (1 - alpha) * min(count / ramp_steps, 1.0) ** 3
            for param in group["params"]:
                state = opt.state[param]
                if LOOKAHEAD_SLOW not in state:
                    state[LOOKAHEAD_SLOW] = param.detach().clone()
                elif sync:
                    slow = state[LOOKAHEAD_SLOW]
                    slow.lerp_(param, weight)
                    param.copy_(slow)

    optimizer.register_step_post_hook(after_step)


# ---------------------------------------------------------------------------
# Learning-rate schedules: (optimizer, ScheduleConfig, steps_per_epoch, total_steps) -> LRScheduler
# ---------------------------------------------------------------------------
#
# constant, step, exponential and cosine are closed-form functions of the step inside one
# LambdaLR, which makes the optional linear warm-up a single `if` in front of them, keeps
# fractional epochs exact, and saves only a step counter in state_dict. onecycle and cyclic
# are torch's OneCycleLR and CyclicLR; triangle is a LambdaLR of straight lines.

Decay = Callable[[float, float], float]
"""(base lr, epochs since the warm-up ended) -> lr."""


def _base_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]


def _warmup_steps(cfg: ScheduleConfig, steps_per_epoch: int) -> int:
    if cfg.warmup_epochs < 0:
        raise ValueError(f"schedule.warmup_epochs must be >= 0, got {cfg.warmup_epochs}")
    if cfg.warmup_epochs == 0:
        return 0
    return max(1, round(cfg.warmup_epochs * steps_per_epoch))


def _warmup_then(
    decay: Decay, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int
) -> LambdaLR:
    """A LambdaLR that warms up linearly over ``cfg.warmup_epochs``, then follows ``decay``.

    Warm-up: step ``t`` (from 0) of ``W`` uses ``base * (t + 1) / W``, so the first step is
    small but not wasted and step ``W - 1`` is at the base lr. After it, ``decay``'s clock
    starts from 0, so the whole schedule is shifted by the warm-up.
    """
    warmup_steps = _warmup_steps(cfg, steps_per_epoch)

    def factor_for(base_lr: float) -> Callable[[int], float]:
        def factor(step: int) -> float:  # LambdaLR multiplies the base lr by this
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            return decay(base_lr, (step - warmup_steps) / steps_per_epoch) / base_lr

        return factor

    return LambdaLR(optimizer, [factor_for(base_lr) for base_lr in _base_lrs(optimizer)])


def _periods(epoch: float, cfg: ScheduleConfig, staircase: bool) -> float:
    """How many decay periods of ``cfg.step_epochs`` have passed; whole ones if ``staircase``."""
    periods = epoch / cfg.step_epochs
    # Periods like 0.7 epochs are not exact in binary: keep 2.9999999 periods from flooring to 2.
    return math.floor(periods + 1e-9) if staircase else periods


def _reject_warmup(cfg: ScheduleConfig) -> None:
    if cfg.warmup_epochs > 0:
        raise ValueError(
            f"schedule {cfg.name!r} ramps up by itself; schedule.warmup_epochs applies to constant, step, "
            f"exponential and cosine: set it to 0 (got {cfg.warmup_epochs})"
        )


@SCHEDULES.register("constant")
def constant_schedule(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int
) -> LRScheduler:
    """``lr = base`` (after the warm-up, if any)."""
    return _warmup_then(lambda base_lr, epoch: base_lr, optimizer, cfg, steps_per_epoch)


@SCHEDULES.register("step")
def step_schedule(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int
) -> LRScheduler:
    """``lr = base * gamma ** floor(epoch / step_epochs)``: drop by ``gamma`` every ``step_epochs``."""

    def decay(base_lr: float, epoch: float) -> float:
        return base_lr * cfg.gamma ** _periods(epoch, cfg, staircase=True)

    return _warmup_then(decay, optimizer, cfg, steps_per_epoch)


@SCHEDULES.register("exponential")
def exponential_schedule(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int
) -> LRScheduler:
    """``lr = base * gamma ** (epoch / step_epochs)``, the exponent floored if ``cfg.staircase``
    (which is then the same schedule as ``step``)."""

    def decay(base_lr: float, epoch: float) -> float:
        return base_lr * cfg.gamma ** _periods(epoch, cfg, staircase=cfg.staircase)

    return _warmup_then(decay, optimizer, cfg, steps_per_epoch)


@SCHEDULES.register("cosine")
def cosine_schedule(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int
) -> LRScheduler:
    """Half a cosine from base down to ``cfg.min_lr`` at ``total_steps`` (SGDR without restarts)::

        lr = min_lr + (base - min_lr) * (1 + cos(pi * t / T)) / 2

    with ``t`` and ``T`` counted from the end of the warm-up; ``lr = min_lr`` after ``T``.
    """
    decay_steps = total_steps - _warmup_steps(cfg, steps_per_epoch)
    if decay_steps < 1:
        raise ValueError(
            f"cosine: the warm-up ({cfg.warmup_epochs} epochs) must be shorter than training "
            f"({total_steps} steps of {steps_per_epoch} per epoch)"
        )
    decay_epochs = decay_steps / steps_per_epoch

    def decay(base_lr: float, epoch: float) -> float:
        progress = min(epoch / decay_epochs, 1.0)
        return cfg.min_lr + (base_lr - cfg.min_lr) * (1 + math.cos(math.pi * progress)) / 2

    return _warmup_then(decay, optimizer, cfg, steps_per_epoch)


def _peak_lrs(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig) -> list[float]:
    """Each group's peak: 10x its base lr, or ``cfg.max_lr`` scaled by the group's share of the
    optimiser's lr (a group at 0.1x ``optim.lr`` peaks at 0.1x ``max_lr``)."""
    if not cfg.max_lr:
        return [10 * base_lr for base_lr in _base_lrs(optimizer)]
    return [cfg.max_lr * base_lr / optimizer.defaults["lr"] for base_lr in _base_lrs(optimizer)]


def _has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimiser has a momentum for OneCycleLR to cycle (SGD's momentum or Adam's beta1)."""
    defaults = optimizer.defaults
    return defaults.get("momentum", 0) > 0 or defaults.get("betas", (0,))[0] > 0


@SCHEDULES.register("onecycle")
def onecycle_schedule(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int
) -> LRScheduler:
    """Smith's 1cycle policy (torch's OneCycleLR): from ``max_lr / 25`` up to ``max_lr`` over the
    first ``pct_start`` of ``total_steps``, then a cosine down to ``max_lr / 2.5e5``.

    ``max_lr`` is ``cfg.max_lr`` (for a parameter group at k x ``optim.lr``, k x ``cfg.max_lr``),
    or 10x the base lr when it is 0. Where the optimiser has a
    momentum (SGD's momentum > 0, Adam's beta1) it is cycled the other way, 0.95 -> 0.85 -> 0.95,
    as the policy prescribes; this replaces ``optim.momentum`` / ``optim.betas[0]`` during the run.
    OneCycleLR raises if stepped more than ``total_steps`` times.
    """
    _reject_warmup(cfg)
    if cfg.pct_start * total_steps == 1:  # OneCycleLR's first phase would end where it starts (0 / 0)
        raise ValueError(
            f"schedule.pct_start {cfg.pct_start} of {total_steps} steps is a one-step warm-up, which "
            "torch's OneCycleLR cannot take; change schedule.pct_start or the number of steps"
        )
    return OneCycleLR(
        optimizer,
        max_lr=_peak_lrs(optimizer, cfg),
        total_steps=total_steps,
        pct_start=cfg.pct_start,
        cycle_momentum=_has_momentum(optimizer),
    )


@SCHEDULES.register("triangle")
def triangle_schedule(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int
) -> LRScheduler:
    """Straight lines up and down (airbench94's schedule): from ``start_factor x max_lr`` at the
    first step up to ``max_lr`` after ``pct_start`` of ``total_steps``, then down to
    ``end_factor x max_lr`` at the last. ``max_lr`` is per group as in onecycle; momentum is
    left alone."""
    _reject_warmup(cfg)
    peak_step = max(1, int(cfg.pct_start * total_steps))
    fall_steps = max(1, total_steps - peak_step)

    def shape(step: int) -> float:  # fraction of the peak
        if step < peak_step:
            return cfg.start_factor + (1 - cfg.start_factor) * step / peak_step
        return 1 + (cfg.end_factor - 1) * min((step - peak_step) / fall_steps, 1.0)

    base_lrs = _base_lrs(optimizer)
    peaks = [peak / base_lr for peak, base_lr in zip(_peak_lrs(optimizer, cfg), base_lrs, strict=True)]
    return LambdaLR(optimizer, [lambda step, k=k: k * shape(step) for k in peaks])


@SCHEDULES.register("cyclic")
def cyclic_schedule(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int
) -> LRScheduler:
    """Triangular cyclical learning rate (Smith 2017, torch's CyclicLR): lr climbs linearly from
    the bottom to the top over half of ``cfg.cycle_epochs``, back down over the other half, and
    repeats.

    Bottom: ``cfg.min_lr``, or the base lr when it is 0. Top: ``cfg.max_lr``, or 10x the base lr
    when it is 0. A parameter group at k x ``optim.lr`` cycles between k x those. Momentum is
    left alone (the 2017 method cycles only the lr), which also makes the schedule work for
    optimisers without momentum, such as Adagrad.
    """
    _reject_warmup(cfg)
    share = [base_lr / optimizer.defaults["lr"] for base_lr in _base_lrs(optimizer)]  # of optim.lr
    bottoms = [cfg.min_lr * k or base_lr for k, base_lr in zip(share, _base_lrs(optimizer), strict=True)]
    tops = _peak_lrs(optimizer, cfg)
    if any(top <= bottom for bottom, top in zip(bottoms, tops, strict=True)):
        raise ValueError(
            f"cyclic: the top lr {tops} must be above the bottom lr {bottoms}; "
            "raise schedule.max_lr or lower schedule.min_lr"
        )
    return CyclicLR(
        optimizer,
        base_lr=bottoms,
        max_lr=tops,
        step_size_up=cfg.cycle_epochs * steps_per_epoch / 2,  # steps; may be fractional
        mode="triangular",
        cycle_momentum=False,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int
) -> LRScheduler:
    """The schedule ``cfg.name`` over ``optimizer``; call its ``step()`` once per optimiser step.

    Building a scheduler writes the optimiser's lr, so to resume, rebuild the optimiser and the
    scheduler from config first, then load the optimiser's and the scheduler's state dicts.
    """
    if steps_per_epoch < 1 or total_steps < 1:
        raise ValueError(
            f"steps_per_epoch and total_steps must be >= 1, got {steps_per_epoch} and {total_steps}"
        )
    return SCHEDULES.get(cfg.name)(optimizer, cfg, steps_per_epoch, total_steps)
