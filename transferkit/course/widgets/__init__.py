"""Interactive controls for the lessons: ipywidgets wired to `transferkit.course.plots`.

Each widget answers one question. The figures are drawn by the pure functions
in `plots`; these modules only connect sliders and menus to them. If a callback
fails, the error is shown in the widget itself (red text under the controls),
never lost in a log the learner cannot see. One module per lesson:

===============================  ===================================================
``widgets.common``               ``Panel``, ``show_in``, ``guarded``, ``LivePlot``
                                 (live training curves: ``fit(..., callbacks=[LivePlot()])``)
``widgets.digits`` (lesson 00)   ``digits_browser``
``widgets.gd`` (01)              ``gd_explorer``, ``optimizer_race``, ``race_settings``
``widgets.training`` (02)        ``label_budget_explorer``
``widgets.autoencoder`` (03)     ``autoencoder_explorer``
``widgets.finetune`` (04)        ``finetune_lab``, ``stage_reports_html``
``widgets.transfer`` (05)        ``transferability_lab``
``widgets.schedules`` (06)       ``schedule_lab``
``widgets.text`` (07)            ``attention_explorer``, ``prompt_lab``
===============================  ===================================================

Plotly's `FigureWidget` needs the ``anywidget`` package, and JupyterLab needs
``jupyterlab_widgets``; both are dependencies of transferkit.
"""

from transferkit.course.widgets.autoencoder import autoencoder_explorer
from transferkit.course.widgets.common import LivePlot, Panel, guarded, show_in
from transferkit.course.widgets.digits import digits_browser
from transferkit.course.widgets.finetune import finetune_lab, stage_reports_html
from transferkit.course.widgets.gd import gd_explorer, gd_readout, optimizer_race, race_settings
from transferkit.course.widgets.schedules import schedule_lab
from transferkit.course.widgets.text import attention_explorer, prompt_lab
from transferkit.course.widgets.training import label_budget_explorer
from transferkit.course.widgets.transfer import transferability_lab

__all__ = [
    "LivePlot", "Panel", "attention_explorer", "autoencoder_explorer", "digits_browser",
    "finetune_lab", "gd_explorer", "gd_readout", "guarded", "label_budget_explorer",
    "optimizer_race", "prompt_lab", "race_settings", "schedule_lab", "show_in",
    "stage_reports_html", "transferability_lab",
]
