import itertools
import json
import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from plotly.callbacks import Points

from transferkit.course import plots, widgets
from transferkit.foundations import gd

ALL = [gd.parabola(), gd.quadratic(L=10, mu=1), gd.rosenbrock(), gd.himmelblau()]


def torch_path(objective, x0, steps, optimizer, **settings):
    """The points torch's own optimizer visits: what `descend` and `adam` must reproduce."""
    p = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = optimizer([p], **settings)
    points = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        objective.fn(p).backward()
        opt.step()
        points.append(p.detach().clone())
    return torch.stack(points)


# --- objectives --------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ALL, ids=lambda o: o.name)
def test_autograd_gradient_matches_the_closed_form(objective):
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = (torch.rand(objective.dim, generator=gen, dtype=torch.float64) - 0.5) * 4
        torch.testing.assert_close(objective.gradient(x), objective.closed_form_gradient(x))


@pytest.mark.parametrize("objective", ALL, ids=lambda o: o.name)
def test_known_minima_are_stationary_points_with_positive_curvature(objective):
    for minimum in objective.minima:
        assert float(objective.gradient(minimum).norm()) < 1e-8
        assert objective.curvature(minimum)[0] > 0
    assert objective.min_value == pytest.approx(0.0, abs=1e-12)


def test_quadratic_curvatures_are_L_and_mu():
    f = gd.quadratic(L=7, mu=0.5)
    torch.testing.assert_close(f.hessian([0.3, -1.0]), torch.diag(torch.tensor([7, 0.5])).double())
    assert f.curvature([1.0, 2.0]) == pytest.approx((0.5, 7.0))
    assert gd.parabola(L=3).curvature([0.0]) == pytest.approx((3.0, 3.0))


def test_objectives_evaluate_whole_grids():
    grid = torch.zeros(5, 4, 2, dtype=torch.float64)
    assert gd.himmelblau()(grid).shape == (5, 4)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: gd.quadratic()([1.0, 2.0, 3.0]), "2 coordinate"),
    (lambda: gd.descend(gd.quadratic(), [1.0], lr=0.1, steps=3), "2 coordinate"),
    (lambda: gd.descend(gd.quadratic(), [1.0, 1.0], lr=0.1, steps=-1), "steps"),
    (lambda: gd.quadratic(L=1, mu=2), "must not exceed"),
    (lambda: gd.quadratic(L=0), "positive"),
    (lambda: gd.objective("bowl"), "quadratic"),
    (lambda: gd.run(gd.quadratic(), [1.0, 1.0], 3, method="lbfgs", lr=0.1), "'sgd' or 'adam'"),
])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- descend is torch.optim.SGD ----------------------------------------------------------

SGD_GRID = list(itertools.product([0.0, 0.5, 0.9], [0.0, 0.3], [False, True], [0.0, 0.05]))


@pytest.mark.parametrize(("momentum", "dampening", "nesterov", "weight_decay"), SGD_GRID)
def test_descend_is_torch_sgd_step_for_step(momentum, dampening, nesterov, weight_decay):
    f, x0 = gd.rosenbrock(), [-1.2, 1.0]
    settings = {"lr": 2e-4, "momentum": momentum, "dampening": dampening,
                "nesterov": nesterov, "weight_decay": weight_decay}
    try:
        expected = torch_path(f, x0, 60, torch.optim.SGD, **settings)
    except ValueError as torch_error:  # torch refuses: descend must refuse, for the same reason
        with pytest.raises(ValueError) as ours:
            gd.descend(f, x0, steps=60, **settings)
        assert str(ours.value).startswith(str(torch_error))
        return
    run = gd.descend(f, x0, steps=60, **settings)
    assert run.points.shape == (61, 2)
    torch.testing.assert_close(run.points, expected, rtol=1e-12, atol=1e-12)


def test_settings_after_steps_are_keyword_only():
    # descend(f, x0, 0.1, 10, 0.9, True) would otherwise set dampening=1 without a word
    with pytest.raises(TypeError):
        gd.descend(gd.quadratic(), [1.0, 1.0], 0.1, 10, 0.9, True)


REFUSED = [
    (torch.optim.SGD, gd.descend, {"lr": -0.1}),
    (torch.optim.SGD, gd.descend, {"lr": 0.1, "momentum": -0.5}),
    (torch.optim.SGD, gd.descend, {"lr": 0.1, "weight_decay": -1.0}),
    (torch.optim.Adam, gd.adam, {"lr": -1.0}),
    (torch.optim.Adam, gd.adam, {"betas": (1.0, 0.999)}),
    (torch.optim.Adam, gd.adam, {"betas": (0.9, -0.1)}),
    (torch.optim.Adam, gd.adam, {"eps": -1e-8}),
]


@pytest.mark.parametrize(("optimizer", "ours", "settings"), REFUSED)
def test_refuses_what_torch_refuses_with_the_same_reason(optimizer, ours, settings):
    with pytest.raises(ValueError) as torch_error:
        optimizer([torch.zeros(2, requires_grad=True)], **settings)
    with pytest.raises(ValueError) as our_error:
        ours(gd.quadratic(), [1.0, 1.0], steps=3, **settings)
    assert str(our_error.value).startswith(str(torch_error.value))
    assert f"{optimizer.__module__.rsplit('.', 1)[0]}.{optimizer.__name__} refuses this too" in (
        str(our_error.value))


# --- divergence --------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0.5, 1e12])
def test_divergence_is_reported_not_raised(lr):
    with np.errstate(all="raise"):
        run = gd.descend(gd.rosenbrock(), [-1.5, 2.0], lr=lr, steps=1000)
    assert run.diverged and run.status == "diverged"
    assert run.steps < 1000  # it stopped early
    assert len(run.points) == len(run.losses) == len(run.grad_norms)
    assert math.isfinite(float(run.losses[0]))


def test_a_slow_run_is_still_moving_and_a_fast_one_converges():
    f = gd.quadratic()
    assert gd.descend(f, f.start, lr=1e-3, steps=20).status == "still moving"
    run = gd.descend(f, f.start, lr=0.18, steps=300)
    assert run.status == "converged"
    assert run.steps_to(1e-6) is not None and run.steps_to(1e-6) < 300
    assert gd.descend(f, f.start, lr=1e-3, steps=20).steps_to(1e-6) is None


# --- the theory on a quadratic -----------------------------------------------------------

MOMENTUM_KINDS = [(0.0, False), (0.5, False), (0.9, False), (0.5, True), (0.9, True)]


@pytest.mark.parametrize(("momentum", "nesterov"), MOMENTUM_KINDS)
def test_just_below_the_stability_limit_converges_just_above_diverges(momentum, nesterov):
    f = gd.quadratic(L=10, mu=1)
    limit = gd.stability_limit(f.L, momentum, nesterov)
    below = gd.descend(f, f.start, lr=0.97 * limit, steps=3000, momentum=momentum,
                       nesterov=nesterov)
    above = gd.descend(f, f.start, lr=1.03 * limit, steps=3000, momentum=momentum,
                       nesterov=nesterov)
    assert below.status == "converged"
    assert above.status == "diverged"
    assert gd.convergence_rate(f.L, f.mu, 0.97 * limit, momentum, nesterov) < 1
    assert gd.convergence_rate(f.L, f.mu, 1.03 * limit, momentum, nesterov) > 1


def test_stability_limits_have_the_textbook_values():
    assert gd.stability_limit(10) == pytest.approx(0.2)
    assert gd.stability_limit(10, momentum=0.9) == pytest.approx(0.38)
    assert gd.stability_limit(10, momentum=0.5, nesterov=True) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="momentum"):
        gd.stability_limit(10, momentum=1.0)


@pytest.mark.parametrize("momentum", [False, True])
def test_optimal_tuning_is_optimal_and_its_rate_is_what_descend_measures(momentum):
    L, mu = 10.0, 0.5
    best = gd.optimal_tuning(L, mu, momentum=momentum)
    assert gd.convergence_rate(L, mu, best.lr, best.momentum) == pytest.approx(best.rate,
                                                                                rel=1e-3)
    for factor in (0.9, 1.1):
        assert gd.convergence_rate(L, mu, factor * best.lr, best.momentum) > best.rate
    run = gd.descend(gd.quadratic(L, mu), [1.0, 1.0], lr=best.lr, steps=120,
                     momentum=best.momentum)
    distance = run.points.norm(dim=1)
    measured = float((distance[120] / distance[60]) ** (1 / 60))
    # Momentum's double eigenvalue adds a factor k to the error, hence the looser tolerance.
    assert measured == pytest.approx(best.rate, rel=0.002 if not momentum else 0.03)


def test_momentum_beats_plain_descent_on_an_ill_conditioned_quadratic():
    L, mu = 100.0, 1.0
    f = gd.quadratic(L, mu)
    plain = gd.optimal_tuning(L, mu)
    heavy = gd.optimal_tuning(L, mu, momentum=True)
    slow = gd.descend(f, f.start, lr=plain.lr, steps=1500).steps_to(1e-8)
    fast = gd.descend(f, f.start, lr=heavy.lr, momentum=heavy.momentum, steps=400).steps_to(1e-8)
    assert fast is not None and slow is not None and fast < slow / 3


def test_local_limit_uses_the_curvature_at_the_nearest_minimum():
    f = gd.rosenbrock()
    minimum, limit = gd.local_limit(f, [0.9, 0.8])
    assert minimum == (1.0, 1.0)
    assert limit == pytest.approx(2 / f.curvature([1.0, 1.0])[1])


# --- figures -----------------------------------------------------------------------------


def _finite_json(fig: go.Figure) -> None:
    json.dumps(fig.to_plotly_json(), allow_nan=False, cls=_NumpyEncoder)


class _NumpyEncoder(json.JSONEncoder):
    def default(self, o):
        return o.tolist() if isinstance(o, np.ndarray) else super().default(o)


def test_contour_figure_draws_surface_minima_and_each_path():
    f = gd.himmelblau()
    runs = {"GD": gd.descend(f, f.start, lr=0.01, steps=30),
            "Adam": gd.adam(f, f.start, lr=0.1, steps=30)}
    fig = plots.contour_figure(f, runs, title="t", resolution=50)
    assert [t.type for t in fig.data] == ["contour", "scatter", "scatter", "scatter"]
    assert [t.name for t in fig.data[1:]] == ["minimum", "GD", "Adam"]
    assert len(fig.data[1].x) == 4
    np.testing.assert_allclose(fig.data[2].x, runs["GD"].points[:, 0].numpy())
    assert np.asarray(fig.data[0].z).shape == (50, 50)


def test_figures_of_a_diverged_run_hold_only_finite_numbers():
    f = gd.rosenbrock()
    run = gd.descend(f, f.start, lr=1e12, steps=50)
    for fig in (plots.contour_figure(f, run), plots.loss_curve_figure(run)):
        _finite_json(fig)


def test_loss_curve_is_on_a_log_scale_with_one_line_per_run():
    f = gd.quadratic()
    runs = [gd.descend(f, f.start, lr=lr, steps=40) for lr in (0.05, 0.1, 0.15)]
    fig = plots.loss_curve_figure(runs)
    assert fig.layout.yaxis.type == "log"
    assert len(fig.data) == 3 and len(fig.data[0].y) == 41
    assert fig.data[2].y[-1] < fig.data[0].y[-1]


def test_descent_1d_figure_marks_every_step():
    f = gd.parabola()
    run = gd.descend(f, f.start, lr=0.5, steps=6)
    fig = plots.descent_1d_figure(f, run)
    assert list(fig.data[1].text) == [str(k) for k in range(7)]
    np.testing.assert_allclose(fig.data[1].y, run.losses.numpy())
    with pytest.raises(ValueError, match="1-D"):
        plots.descent_1d_figure(gd.quadratic(), gd.descend(gd.quadratic(), [1, 1], 0.1, 3))
    with pytest.raises(ValueError, match="2-D"):
        plots.contour_figure(f, run)


# --- widgets -----------------------------------------------------------------------------


def test_explorer_learning_rate_redraws_path_and_readout():
    panel = widgets.gd_explorer("quadratic", steps=40)
    assert "still moving" in panel.status.value or "converged" in panel.status.value
    before = list(panel.figures[0].data[2].x)
    panel.controls["learning rate"].value = 0.25  # past 2/L = 0.2
    assert list(panel.figures[0].data[2].x) != before
    assert "diverged" in panel.status.value and "1.25× the stability limit" in panel.status.value
    assert "α = 0.25" in panel.figures[0].layout.title.text


def test_explorer_objective_and_click_to_start():
    panel = widgets.gd_explorer("quadratic")
    z_before = np.asarray(panel.figures[0].data[0].z)
    panel.controls["objective"].value = "rosenbrock"
    assert not np.allclose(np.asarray(panel.figures[0].data[0].z), z_before)
    assert panel.controls["learning rate"].value < gd.local_limit(gd.rosenbrock(), (1, 1))[1]
    panel.figures[0].data[0]._dispatch_on_click(Points([0], [0.5], [-0.5]), None)
    assert (panel.controls["start x"].value, panel.controls["start y"].value) == (0.5, -0.5)
    assert panel.figures[0].data[2].x[0] == 0.5 and panel.figures[0].data[2].y[0] == -0.5


def test_explorer_shows_a_refused_setting_in_the_widget():
    panel = widgets.gd_explorer("quadratic")
    panel.controls["Nesterov"].value = True  # with momentum 0: torch refuses
    assert "transferkit-error" in panel.status.value
    assert "Nesterov momentum requires a momentum" in panel.status.value
    panel.controls["momentum"].value = 0.5
    assert "transferkit-readout" in panel.status.value
    assert "2(1+β)/((1+2β)L)" in panel.status.value


def test_optimizer_race_draws_every_optimizer_and_redraws():
    panel = widgets.optimizer_race("quadratic", steps=50)
    names = [t.name for t in panel.figures[0].data[2:]]
    assert names == list(widgets.race_settings(gd.quadratic()))
    assert len(panel.figures[1].data) == len(names)
    panel.controls["race steps"].value = 100
    assert len(panel.figures[1].data[0].x) == 101
    panel.controls["surface"].value = "himmelblau"
    assert panel.figures[0].layout.title.text.startswith("himmelblau")
    assert panel.status.value == ""
