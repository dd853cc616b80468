"""Figures for the course, as pure functions: data in, plotly `Figure` out.

Nothing here touches widgets or global state, so every figure can be built and
checked in a test without a browser; `transferkit.course.widgets` wires controls to
these functions. One module per lesson, all importable from here:

==============================  ==================================================
``plots.common``                ``image_grid``, ``history_figure`` (a `History` or
                                a `FineTuneResult`), ``class_counts_figure``
``plots.gd`` (lesson 01)        ``contour_figure``, ``loss_curve_figure``,
                                ``descent_1d_figure``
``plots.training`` (02)         ``confusion_matrix_figure``, ``curves_figure``,
                                ``sweep_figure``, ``label_budget_figure``
``plots.autoencoder`` (03)      ``reconstruction_grid``, ``code_size_figure``,
                                ``code_map_figure``, ``interpolation_figure``
``plots.finetune`` (04)         ``shift_figure``, ``feature_drift_figure``
``plots.transfer`` (05)         ``photo_grid``, ``transferability_figure``
``plots.schedules`` (06)        ``schedule_figure``, ``cost_figure``
``plots.text`` (07)             ``attention_figure``, ``prompt_accuracy_figure``,
                                ``step_curve_figure``, ``live_and_stored_figure``
==============================  ==================================================
"""

from transferkit.course.plots.autoencoder import (
    code_map_figure,
    code_size_figure,
    interpolation_figure,
    reconstruction_grid,
)
from transferkit.course.plots.common import (
    class_counts_figure,
    history_columns,
    history_figure,
    image_grid,
)
from transferkit.course.plots.finetune import feature_drift_figure, shift_figure
from transferkit.course.plots.gd import contour_figure, descent_1d_figure, loss_curve_figure
from transferkit.course.plots.schedules import cost_figure, schedule_figure
from transferkit.course.plots.text import (
    attention_figure,
    live_and_stored_figure,
    prompt_accuracy_figure,
    step_curve_figure,
)
from transferkit.course.plots.training import (
    confusion_matrix_figure,
    curves_figure,
    label_budget_figure,
    sweep_figure,
)
from transferkit.course.plots.transfer import photo_grid, transferability_figure

__all__ = [
    "attention_figure", "class_counts_figure", "code_map_figure", "code_size_figure",
    "confusion_matrix_figure", "contour_figure", "cost_figure", "curves_figure",
    "descent_1d_figure", "feature_drift_figure", "history_columns", "history_figure",
    "image_grid", "interpolation_figure", "label_budget_figure", "live_and_stored_figure",
    "loss_curve_figure", "photo_grid", "prompt_accuracy_figure", "reconstruction_grid",
    "schedule_figure", "shift_figure", "step_curve_figure", "sweep_figure",
    "transferability_figure",
]
