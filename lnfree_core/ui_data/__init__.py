"""Data helpers for the Streamlit app that need no Streamlit: frames for charts, downsampling, ETA,
launch plans, log tails, schedule files as text, and a background command runner.

Everything here is plain Python/pandas so it can be unit-tested without a browser. The pages turn
these frames into widgets and Altair charts. One module per subject:

  schedule_view    removal events and LR curve of a schedule; schedule files as text
  metrics          metrics.jsonl as frames, downsampling, MetricsCache
  runs             ETA and progress, run requests, device choices, launch plans, the runs table
  throughput_view  tokens/s, TFLOP/s, MFU and the whole schedule's time of a run
  background       BackgroundCommand, log tails, progress parsed from output
  demo_suite       the demo suite: state, catalog, build command, tables, vocabulary mapping
  model_specs      model specs: kind, labels, context length, problems
  token_view       tokens as coloured HTML spans
  analysis_frames  frames of the analysis pages (Compare, Outliers, First tokens, Confidence, DLA)
  families         the supported model families (Home table) and which family a model spec is

Every public name is importable from `lnfree_core.ui_data` itself, as before the split.
"""

from __future__ import annotations

from .schedule_view import (
    GROUP_LABELS, group_of, events_frame, lr_frame, schedule_to_text, schedule_from_text, schedule_summary,
)
from .metrics import (
    STEP_METRICS, METRIC_TITLES, DEFAULT_MAX_POINTS, to_float, step_frame, sigma_frame, removal_frame,
    notable_events, metric_long, downsample, MetricsCache,
)
from .runs import (
    MODE_CHOICES, seconds_per_step, eta_seconds, format_duration, progress_text, run_request, DeviceChoice,
    device_choices, pair_names, partner_run, launch_plan, parse_keep_steps, runs_frame,
)
from .throughput_view import throughput_info, throughput_caption
from .background import tail_lines, parse_progress, BackgroundCommand, python_command
from .demo_suite import (
    DEMO_BUILD, DEMO_CLI_MODULE, DEMO_MODULE, demo_models_available, demo_suite_state, demo_catalog,
    built_demo_models, built_demo_datasets, demo_tables, gpt2_id_mapper,
)
from .model_specs import (
    model_kind, model_label, unique_names, unique_labels, model_context, model_option_text, model_spec_problem,
)
from .token_view import display_token, token_spans_html
from .families import FAMILY_TABLE, data_fit_problem, families_frame, family_hub_examples, model_family
from .analysis_frames import (
    SUMMARY_STATS, RANGE_STATS, CERow, ce_summary_frame, stat_table, range_frame, frame_markdown, loss_histogram,
    ranked_frame, token_frame, norm_profile_frame, sink_frames, cn_scatter_frame, ablation_frames, svd_frame,
    nmae_head_frame, nmae_summary_frame, job_fraction,
)

__all__ = [
    "BackgroundCommand", "CERow", "FAMILY_TABLE", "data_fit_problem", "families_frame", "family_hub_examples", "model_family", "DEFAULT_MAX_POINTS", "DEMO_BUILD", "DEMO_CLI_MODULE", "DEMO_MODULE",
    "DeviceChoice", "GROUP_LABELS", "METRIC_TITLES", "MODE_CHOICES", "MetricsCache", "RANGE_STATS", "STEP_METRICS",
    "SUMMARY_STATS", "ablation_frames", "built_demo_datasets", "built_demo_models", "ce_summary_frame",
    "cn_scatter_frame", "demo_catalog", "demo_models_available", "demo_suite_state", "demo_tables",
    "device_choices", "display_token", "downsample", "eta_seconds", "events_frame", "format_duration",
    "frame_markdown", "gpt2_id_mapper", "group_of", "job_fraction", "launch_plan", "loss_histogram", "lr_frame", "parse_keep_steps",
    "metric_long", "model_context", "model_kind", "model_label", "model_option_text", "model_spec_problem",
    "nmae_head_frame", "nmae_summary_frame", "norm_profile_frame", "notable_events", "pair_names", "parse_progress",
    "partner_run", "progress_text", "python_command", "range_frame", "ranked_frame", "removal_frame", "run_request",
    "runs_frame", "schedule_from_text", "schedule_summary", "schedule_to_text", "seconds_per_step", "sigma_frame",
    "sink_frames", "stat_table", "step_frame", "svd_frame", "tail_lines", "throughput_caption",
    "throughput_info", "to_float", "token_frame",
    "token_spans_html", "unique_labels", "unique_names",
]
