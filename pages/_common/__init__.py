"""Widgets and charts shared by lnfree's pages (not a page itself: app.py registers pages explicitly).

Pages import what they use from its module (`from pages._common.state import PERSIST, page_setup`);
this package re-exports nothing. One module per subject:

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
