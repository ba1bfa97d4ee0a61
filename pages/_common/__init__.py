"""Widgets and charts shared by lnfree's pages (not a page itself: app.py registers pages explicitly).

Pages use it as `from pages import _common as common`; every name below is importable from here.
One module per subject:

  state            page_setup, the runs root, persisted widget values, registered pages and links
  background       work in a worker thread (run_in_background and its Future)
  env              demo models, GPUs, Hub reachability, a model's layer count
  pickers          run, model and dataset pickers (Train and Runs pages)
  charts           Vega-Lite specs of the training charts; colours and sizing of the analysis charts
  analysis_inputs  the analysis pages' shared model set, dataset, data size and computation settings
  analysis_jobs    running analyses under one progress bar; dataset labels; GPT-2 token decoding
  ui_data/         the Streamlit-free data behind the pages (frames, run tables, demo-suite views),
                   imported from its modules (`from pages._common.ui_data.runs import runs_frame`)

Session-state keys other pages rely on:
  runs_root          the runs root (sidebar text input in app.py; default ./runs)
  designed_schedule  the schedule made on the Schedule page (Schedule.to_dict()), absent while the
                     design there cannot run (designed_schedule_error then says why)
  selected_runs      run names picked on the Runs page (also passed to analysis pages as ?runs=a&runs=b)
Widgets drawn with **PERSIST keep their values when the user changes page and comes back.
"""

from __future__ import annotations

import lnfree_core.demo  # noqa: F401  (plug-in: registers the demo: names for pages run on their own)
from pages._common.ui_data.schedule_view import GROUP_LABELS

from .state import (
    ANALYSIS_SECTION, DEFAULT_RUNS_ROOT, PAGES_KEY, PERSIST, WORKBENCH_SECTION, for_page, inside_app, page_link, page_registered,
    page_setup, register_pages, registered_pages, runs_root, runs_root_sidebar, seed, selected_runs, show_error,
)
from .background import background_future, clear_background, run_in_background
from .env import demo_available, gpu_count, hub_reachable, model_context, model_layers
from .pickers import DEMO_MODELS, MODEL_KINDS, dataset_picker, model_picker, run_picker
from .charts import (
    GROUP_COLORS, MODEL_PALETTE, RUN_COLORS, fit_chart, group_color_scale, layered_chart, metric_chart, model_color,
    removal_rules, show_chart, sigma_chart,
)
from .analysis_inputs import (
    DEFAULT_CACHE_DIR, DEFAULT_N_SEQUENCES, DEFAULT_SEQ_LEN, MODELS_KEY, PAPER_MODELS, analysis_dataset_picker,
    analysis_settings, data_size_inputs, default_datasets, default_models, missing_inputs_hint, model_labels,
    model_set_picker,
    models_and_data, one_dataset_inputs, shared_widget,
)
from .analysis_jobs import (
    JobProgress, analysis_errors, data_spec, dataset_label, dataset_labels, evaluate_models, gpt2_decoder, gpt2_ids,
    model_decoder, run_jobs, run_options,
)

__all__ = [
    "ANALYSIS_SECTION", "DEFAULT_CACHE_DIR", "DEFAULT_N_SEQUENCES", "DEFAULT_RUNS_ROOT", "DEFAULT_SEQ_LEN",
    "DEMO_MODELS", "GROUP_COLORS", "GROUP_LABELS", "JobProgress", "MODELS_KEY", "MODEL_KINDS", "MODEL_PALETTE",
    "PAGES_KEY", "PAPER_MODELS", "PERSIST", "RUN_COLORS", "WORKBENCH_SECTION", "analysis_dataset_picker",
    "analysis_errors", "analysis_settings", "background_future", "clear_background", "data_size_inputs",
    "data_spec", "dataset_label", "dataset_labels", "dataset_picker", "default_datasets", "default_models",
    "demo_available", "evaluate_models", "fit_chart", "for_page", "gpt2_decoder", "gpt2_ids", "gpu_count", "group_color_scale",
    "hub_reachable", "inside_app", "layered_chart", "metric_chart", "missing_inputs_hint", "model_color", "model_context", "model_decoder", "model_labels", "model_layers", "model_picker",
    "model_set_picker", "models_and_data", "one_dataset_inputs", "page_link", "page_registered", "page_setup",
    "register_pages", "registered_pages", "removal_rules", "run_in_background", "run_jobs", "run_options",
    "run_picker", "runs_root", "runs_root_sidebar", "seed", "selected_runs", "shared_widget", "show_chart",
    "show_error", "sigma_chart",
]
