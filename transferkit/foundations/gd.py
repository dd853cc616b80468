"""Gradient descent, step by step: the update every later lesson relies on.

Gradient descent minimises a loss L(θ) by repeating

    θ ← θ − α ∇L(θ)

with a learning rate α. This module lets you watch that loop on small functions
you can draw (`parabola`, `quadratic`, `rosenbrock`, `himmelblau`), break it (a
learning rate past the stability limit) and repair it (momentum, Nesterov).

`descend` is the loop of `torch.optim.SGD`, written out so you can read it; it
gives the same numbers as `torch.optim.SGD` step for step, for every combination
of settings torch accepts, and refuses the ones torch refuses with the same
reason. `adam` does the same for `torch.optim.Adam`.

On a quadratic with curvatures μ ≤ L (the eigenvalues of its Hessian), the
theory is exact and this module states it as functions you can test:

* plain gradient descent converges iff 0 < α < 2/L (`stability_limit`);
* heavy-ball momentum β converges iff 0 < αL < 2(1 + β);
* the best step and rate (`optimal_tuning`): α = 2/(L + μ) with rate (κ−1)/(κ+1),
  and with momentum α = 4/(√L + √μ)², β = ((√κ−1)/(√κ+1))², rate (√κ−1)/(√κ+1),
  where κ = L/μ is the condition number.

Example::

    >>> f = quadratic(L=10, mu=1)
    >>> run = descend(f, [1.0, 1.0], lr=0.19, steps=200)
    >>> run.status
    'converged'
    >>> descend(f, [1.0, 1.0], lr=0.21, steps=200).status
    'diverged'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor

# A run counts as exploded once the loss exceeds this many times its start value.
EXPLOSION_FACTOR = 1e6


# --- objectives --------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """A function to minimise, with what we know about it.

    ``fn`` maps points of shape ``(..., dim)`` to values of shape ``(...)``, so the same
    code evaluates one point or a whole grid (for contour plots). Gradients come from
    autograd (`gradient`); ``closed_form_gradient``, when given, is the formula by hand,
    used in tests to check autograd.
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    dim: int
    minima: tuple[tuple[float, ...], ...]
    bounds: tuple[tuple[float, float], ...]  # a box that shows the interesting part
    start: tuple[float, ...]  # a start point that makes a good first picture
    closed_form_gradient: Callable[[Tensor], Tensor] | None = None
    formula: str = ""  # LaTeX, for titles and the lesson
    L: float | None = None  # largest curvature, where it is the same everywhere
    mu: float | None = None  # smallest curvature, likewise

    def __call__(self, x: Tensor | Sequence[float]) -> Tensor:
        return self.fn(_point(x, self.dim))

    def value(self, x: Tensor | Sequence[float]) -> float:
        """f(x) as a Python float."""
        return float(self(x))

    def gradient(self, x: Tensor | Sequence[float]) -> Tensor:
        """∇f(x), computed by autograd."""
        x = _point(x, self.dim).detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.fn(x), x)
        return grad

    def hessian(self, x: Tensor | Sequence[float]) -> Tensor:
        """The matrix of second derivatives at ``x`` (autograd)."""
        return torch.autograd.functional.hessian(self.fn, _point(x, self.dim))

    def curvature(self, x: Tensor | Sequence[float]) -> tuple[float, float]:
        """(smallest, largest) eigenvalue of the Hessian at ``x``: the curvatures there."""
        eig = torch.linalg.eigvalsh(self.hessian(x).reshape(self.dim, self.dim))
        return float(eig[0]), float(eig[-1])

    @property
    def min_value(self) -> float:
        """f at its (global) minimisers."""
        return min(self.value(m) for m in self.minima)

    def nearest_minimum(self, x: Tensor | Sequence[float]) -> tuple[float, ...]:
        """The known minimiser closest to ``x``."""
        point = _point(x, self.dim)
        return min(self.minima, key=lambda m: float(torch.dist(point, _point(m, self.dim))))


def _point(x: Tensor | Sequence[float], dim: int) -> Tensor:
    """A float64 tensor with last dimension ``dim``; a clear error otherwise."""
    t = torch.as_tensor(x, dtype=torch.float64)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.shape[-1] != dim:
        raise ValueError(f"this function takes points with {dim} coordinate(s), "
                         f"got shape {tuple(t.shape)}; pass e.g. x0={[0.0] * dim}.")
    return t


def parabola(L: float = 1.0, center: float = 3.0) -> Objective:
    """f(x) = L/2 · (x − c)², the 1-D bowl of the first picture; curvature L everywhere."""
    _positive("L", L)
    return Objective(
        name="parabola",
        fn=lambda x: 0.5 * L * (x[..., 0] - center) ** 2,
        dim=1,
        minima=((center,),),
        bounds=((center - 4.0, center + 4.0),),
        start=(center - 3.0,),
        closed_form_gradient=lambda x: L * (x - center),
        formula=rf"f(x) = \tfrac{{{L:g}}}{{2}}(x - {center:g})^2",
        L=L,
        mu=L,
    )


def quadratic(L: float = 10.0, mu: float = 1.0) -> Objective:
    """f(x, y) = (L·x² + μ·y²)/2: a long, narrow valley when L ≫ μ.

    Its Hessian is diag(L, μ) everywhere, so L and μ are its largest and smallest
    curvatures and κ = L/μ its condition number.
    """
    _positive("L", L)
    _positive("mu", mu)
    if mu > L:
        raise ValueError(f"mu ({mu}) must not exceed L ({L}): L is the largest curvature.")
    scale = torch.tensor([L, mu], dtype=torch.float64)
    return Objective(
        name="quadratic",
        fn=lambda x: 0.5 * (L * x[..., 0] ** 2 + mu * x[..., 1] ** 2),
        dim=2,
        minima=((0.0, 0.0),),
        bounds=((-2.0, 2.0), (-2.0, 2.0)),
        start=(-1.5, 1.7),
        closed_form_gradient=lambda x: scale * x,
        formula=rf"f(x, y) = \tfrac{{1}}{{2}}({L:g}x^2 + {mu:g}y^2)",
        L=float(L),
        mu=float(mu),
    )


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Objective:
    """f(x, y) = (a − x)² + b(y − x²)²: a curved, flat-bottomed valley; minimum (a, a²)."""

    def grad(x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        return torch.stack([-2 * (a - u) - 4 * b * u * (v - u**2), 2 * b * (v - u**2)], -1)

    return Objective(
        name="rosenbrock",
        fn=lambda x: (a - x[..., 0]) ** 2 + b * (x[..., 1] - x[..., 0] ** 2) ** 2,
        dim=2,
        minima=((a, a * a),),
        bounds=((-2.0, 2.0), (-1.0, 3.0)),
        start=(-1.5, 2.0),
        closed_form_gradient=grad,
        formula=rf"f(x, y) = ({a:g} - x)^2 + {b:g}(y - x^2)^2",
    )


def himmelblau() -> Objective:
    """f(x, y) = (x² + y − 11)² + (x + y² − 7)²: four minima, each with f = 0."""

    def grad(x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        p, q = u**2 + v - 11, u + v**2 - 7
        return torch.stack([4 * u * p + 2 * q, 2 * p + 4 * v * q], -1)

    return Objective(
        name="himmelblau",
        fn=lambda x: (x[..., 0] ** 2 + x[..., 1] - 11) ** 2 + (x[..., 0] + x[..., 1] ** 2 - 7) ** 2,
        dim=2,
        minima=((3.0, 2.0), (-2.805118086952745, 3.131312518250573),
                (-3.779310253377747, -3.283185991286170), (3.584428340330492, -1.848126526964404)),
        bounds=((-5.0, 5.0), (-5.0, 5.0)),
        start=(-0.5, 0.0),
        closed_form_gradient=grad,
        formula=r"f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2",
    )


OBJECTIVES: dict[str, Callable[[], Objective]] = {
    "parabola": parabola, "quadratic": quadratic, "rosenbrock": rosenbrock,
    "himmelblau": himmelblau,
}


def objective(name: str) -> Objective:
    """One of `OBJECTIVES` by name, with its default settings."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}.")
    return OBJECTIVES[name]()


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}.")


# --- trajectories ------------------------------------------------------------------------


@dataclass
class Trajectory:
    """What one run of an optimiser did.

    ``points[k]`` is θ after k steps (``points[0]`` is the start), ``losses[k]`` and
    ``grad_norms[k]`` are f and ‖∇f‖ there. A run that diverged stops at the first
    point whose loss is not finite or has exploded (see `EXPLOSION_FACTOR`), so it may
    hold fewer than ``steps + 1`` points.
    """

    points: Tensor
    losses: Tensor
    grad_norms: Tensor
    diverged: bool
    settings: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """How many updates were made."""
        return len(self.points) - 1

    @property
    def final(self) -> Tensor:
        return self.points[-1]

    @property
    def status(self) -> str:
        """'diverged', 'converged' (the gradient shrank a millionfold, or below 1e-8), or
        'still moving'."""
        if self.diverged:
            return "diverged"
        if self.grad_norms[-1] <= max(1e-6 * float(self.grad_norms[0]), 1e-8):
            return "converged"
        return "still moving"

    def steps_to(self, tolerance: float, f_min: float = 0.0) -> int | None:
        """The first step at which f − f_min ≤ ``tolerance`` (None if never)."""
        hits = torch.nonzero(self.losses - f_min <= tolerance).flatten()
        return int(hits[0]) if len(hits) else None

    def __repr__(self) -> str:
        where = ", ".join(f"{v:.4g}" for v in self.final.tolist())
        return (f"Trajectory({self.status} after {self.steps} steps at ({where}), "
                f"loss {float(self.losses[-1]):.4g})")


def _run(objective: Objective, x0, steps: int, update: Callable[[Tensor, Tensor], Tensor],
         settings: dict) -> Trajectory:
    """Apply ``x ← update(x, ∇f(x))`` ``steps`` times, recording the path; stop on divergence."""
    if steps < 0 or int(steps) != steps:
        raise ValueError(f"steps must be a whole number ≥ 0, got {steps}.")
    x = _point(x0, objective.dim).reshape(objective.dim).clone()
    points, losses, norms = [], [], []
    explosion_threshold = None
    diverged = False
    for step in range(int(steps) + 1):
        with torch.no_grad():
            loss = float(objective.fn(x))
        points.append(x.clone())
        losses.append(loss)
        if explosion_threshold is None:
            explosion_threshold = EXPLOSION_FACTOR * max(abs(loss), 1.0)
        exploded = not (math.isfinite(loss) and abs(loss) <= explosion_threshold)
        if exploded or not torch.isfinite(x).all():
            norms.append(math.inf)
            diverged = True
            break
        grad = objective.gradient(x)
        norms.append(float(grad.norm()))
        if step < steps:
            x = update(x, grad)
    return Trajectory(torch.stack(points), torch.tensor(losses, dtype=torch.float64),
                      torch.tensor(norms, dtype=torch.float64), diverged, settings)


def check_sgd_settings(lr: float, momentum: float = 0.0, dampening: float = 0.0,
                       nesterov: bool = False, weight_decay: float = 0.0) -> None:
    """Refuse what `torch.optim.SGD` refuses: torch's own reason, then the fix."""
    for reason, refused, fix in (
        (f"Invalid learning rate: {lr}", lr < 0, "use a learning rate ≥ 0"),
        (f"Invalid momentum value: {momentum}", momentum < 0, "use a momentum ≥ 0"),
        (f"Invalid weight_decay value: {weight_decay}", weight_decay < 0,
         "use a weight decay ≥ 0"),
        ("Nesterov momentum requires a momentum and zero dampening",
         nesterov and (momentum <= 0 or dampening != 0),
         "set momentum > 0 and dampening = 0, or nesterov=False"),
    ):
        if refused:
            raise ValueError(f"{reason} (torch.optim.SGD refuses this too): {fix}.")


def check_adam_settings(lr: float, betas: tuple[float, float] = (0.9, 0.999),
                        eps: float = 1e-8, weight_decay: float = 0.0) -> None:
    """Refuse what `torch.optim.Adam` refuses: torch's own reason, then the fix."""
    b1, b2 = betas
    for name, value, ok in (("learning rate", lr, lr >= 0), ("epsilon value", eps, eps >= 0),
                            ("beta parameter at index 0", b1, 0 <= b1 < 1),
                            ("beta parameter at index 1", b2, 0 <= b2 < 1),
                            ("weight_decay value", weight_decay, weight_decay >= 0)):
        if not ok:
            raise ValueError(f"Invalid {name}: {value} (torch.optim.Adam refuses this too): "
                             "learning rate, epsilon and weight decay must be ≥ 0, betas in "
                             "[0, 1).")


def descend(
    objective: Objective,
    x0: Tensor | Sequence[float],
    lr: float,
    steps: int,
    *,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> Trajectory:
    """Gradient descent from ``x0``: the update of `torch.optim.SGD`, written out.

    Each step, with g = ∇f(θ):

    1. weight decay adds λθ to the gradient:         g ← g + λθ
    2. momentum keeps a running sum of gradients:    b ← β·b + (1 − dampening)·g
       (on the first step b ← g)
    3. Nesterov looks ahead along it:                g ← g + β·b;   otherwise g ← b
    4. the update:                                   θ ← θ − α·g

    With momentum = 0 this is plain θ ← θ − α∇f(θ). Same settings, same numbers as
    ``torch.optim.SGD``.
    """
    check_sgd_settings(lr, momentum, dampening, nesterov, weight_decay)
    buffer: list[Tensor] = []

    def update(x: Tensor, grad: Tensor) -> Tensor:
        if weight_decay != 0:
            grad = grad.add(x, alpha=weight_decay)
        if momentum != 0:
            if not buffer:
                buffer.append(grad.clone())
            else:
                buffer[0].mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buffer[0], alpha=momentum) if nesterov else buffer[0]
        return x.add(grad, alpha=-lr)

    settings = {"method": "sgd", "lr": lr, "momentum": momentum, "dampening": dampening,
                "nesterov": nesterov, "weight_decay": weight_decay}
    return _run(objective, x0, steps, update, settings)


def adam(
    objective: Objective,
    x0: Tensor | Sequence[float],
    lr: float = 1e-3,
    steps: int = 100,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
) -> Trajectory:
    """Adam from ``x0``: the update of `torch.optim.Adam`, written out.

    Adam keeps running averages of the gradient (m) and of its square (v), corrects
    their bias towards zero in the first steps, and moves each coordinate by
    α·m̂/(√v̂ + ε): a step of about α whatever the gradient's scale.
    """
    check_adam_settings(lr, betas, eps, weight_decay)
    b1, b2 = betas
    m = v = v_max = None
    t = 0

    def update(x: Tensor, grad: Tensor) -> Tensor:
        nonlocal m, v, v_max, t
        t += 1
        if weight_decay != 0:
            grad = grad.add(x, alpha=weight_decay)
        if m is None:
            m, v, v_max = torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)
        m.lerp_(grad, 1 - b1)  # m ← β1·m + (1 − β1)·g
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)  # v ← β2·v + (1 − β2)·g²
        step_size = lr / (1 - b1**t)
        if amsgrad:
            v_max = torch.maximum(v_max, v)
        denom = ((v_max if amsgrad else v).sqrt() / (1 - b2**t) ** 0.5).add_(eps)
        return x.addcdiv(m, denom, value=-step_size)

    settings = {"method": "adam", "lr": lr, "betas": betas, "eps": eps,
                "weight_decay": weight_decay, "amsgrad": amsgrad}
    return _run(objective, x0, steps, update, settings)


def run(objective: Objective, x0, steps: int, method: str = "sgd", **settings) -> Trajectory:
    """`descend` (``method='sgd'``) or `adam` (``method='adam'``) with the given settings."""
    if method == "sgd":
        return descend(objective, x0, steps=steps, **settings)
    if method == "adam":
        return adam(objective, x0, steps=steps, **settings)
    raise ValueError(f"unknown method {method!r}; use 'sgd' or 'adam'.")


def compare(objective: Objective, x0, steps: int,
            runs: dict[str, dict]) -> dict[str, Trajectory]:
    """Several optimisers from one start point: ``runs`` maps a name to `run`'s settings.

    >>> runs = compare(quadratic(), (1.0, 1.0), 50, {"GD": {"lr": 0.1},
    ...                "Adam": {"method": "adam", "lr": 0.1}})
    >>> sorted(runs)
    ['Adam', 'GD']
    """
    return {name: run(objective, x0, steps, **settings) for name, settings in runs.items()}


# --- theory on a quadratic ---------------------------------------------------------------


def stability_limit(L: float, momentum: float = 0.0, nesterov: bool = False) -> float:
    """The largest stable learning rate on a quadratic of largest curvature L.

    Plain gradient descent multiplies the error along the steepest direction by
    (1 − αL) each step, so it shrinks iff |1 − αL| < 1, i.e. α < 2/L. Heavy-ball
    momentum β stretches the limit to α < 2(1 + β)/L; Nesterov's look-ahead (as
    `torch.optim.SGD` does it) to α < 2(1 + β)/((1 + 2β)L).
    """
    _positive("L", L)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
    if nesterov:
        return 2 * (1 + momentum) / ((1 + 2 * momentum) * L)
    return 2 * (1 + momentum) / L


def convergence_rate(L: float, mu: float, lr: float, momentum: float = 0.0,
                     nesterov: bool = False) -> float:
    """How much the error shrinks per step, asymptotically, on a quadratic with
    curvatures μ and L: the spectral radius of the update (≥ 1 means no convergence).

    Along a direction of curvature λ, `descend` maps (θ, b) — the point and the momentum
    buffer — linearly: b' = βb + λθ, then θ' = θ − αb' (heavy ball) or
    θ' = θ − α(λθ + βb') (Nesterov). The rate is the largest eigenvalue magnitude of
    that 2×2 map over λ ∈ {μ, L}; with β = 0 it is max |1 − αλ|.
    """
    _positive("L", L)
    _positive("mu", mu)
    b = momentum
    rates = []
    for lam in (mu, L):
        h = lr * lam
        if nesterov:
            rows = [[1 - h * (1 + b), -lr * b * b], [lam, b]]
        else:
            rows = [[1 - h, -lr * b], [lam, b]]
        matrix = torch.tensor(rows, dtype=torch.float64)
        rates.append(float(torch.linalg.eigvals(matrix).abs().max()))
    return max(rates)


@dataclass(frozen=True)
class Tuning:
    """The best settings for a quadratic and the rate they achieve."""

    lr: float
    momentum: float
    rate: float


def optimal_tuning(L: float, mu: float, momentum: bool = False) -> Tuning:
    """The step (and momentum) that converge fastest on a quadratic with curvatures μ, L.

    Plain GD: α = 2/(L + μ), rate (κ − 1)/(κ + 1). Heavy ball (Polyak):
    α = 4/(√L + √μ)², β = ((√κ − 1)/(√κ + 1))², rate (√κ − 1)/(√κ + 1); κ = L/μ.
    """
    _positive("L", L)
    _positive("mu", mu)
    kappa = L / mu
    if not momentum:
        return Tuning(lr=2 / (L + mu), momentum=0.0, rate=(kappa - 1) / (kappa + 1))
    root = math.sqrt(kappa)
    return Tuning(lr=4 / (math.sqrt(L) + math.sqrt(mu)) ** 2,
                  momentum=((root - 1) / (root + 1)) ** 2, rate=(root - 1) / (root + 1))


def local_limit(objective: Objective, near: Tensor | Sequence[float],
                momentum: float = 0.0, nesterov: bool = False) -> tuple[tuple[float, ...], float]:
    """(minimiser, stability limit) for the known minimum nearest ``near``.

    Close to a minimum every smooth function looks like a quadratic whose largest
    curvature L is the Hessian's largest eigenvalue there; 2(1 + β)/L is then the
    learning rate above which gradient descent cannot settle into that minimum
    (`stability_limit`).
    """
    minimum = objective.nearest_minimum(near)
    L = objective.L if objective.L is not None else objective.curvature(minimum)[1]
    return minimum, stability_limit(L, momentum, nesterov)
