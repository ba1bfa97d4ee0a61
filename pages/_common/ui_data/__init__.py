"""Data helpers of the Streamlit app that need no Streamlit (app-only: the CLI and library never use them): frames for charts, downsampling, ETA,
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

Import what you use from its module (`from pages._common.ui_data.runs import runs_frame`).
"""
