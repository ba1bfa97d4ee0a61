"""Chart specs shared by the pages: Vega-Lite dicts for the training charts (metrics, sigmas, removal
rules) and the colour channel and sizing of the analysis pages' Altair charts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st


GROUP_COLORS = {"LN_MLP": "#1f77b4", "LN_qk": "#ff7f0e", "LN_v": "#2ca02c", "LN_f": "#d62728"}


# Charts are plain Vega-Lite specs (dicts) shown with show_chart(): building them is cheap, which
# matters for the Train page's live view (Altair's spec building and validation cost about a second
# for six charts on a small CPU, too slow to redraw every few seconds). Data go in spec["datasets"]
# as DataFrames; Streamlit ships them as Arrow.


RUN_COLORS = ["#222222", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def group_color_scale() -> dict:
    return {"domain": list(GROUP_COLORS), "range": list(GROUP_COLORS.values())}


def show_chart(spec: dict) -> None:
    """Draw a Vega-Lite spec made by the helpers below, as wide as the page."""
    st.vega_lite_chart(spec=spec, width="stretch")


def layered_chart(layers: list[dict], datasets: dict[str, pd.DataFrame], *, title: str, height: int,
                  independent_colors: bool = False) -> dict:
    """A layered Vega-Lite spec with `height` px of plot area (axes, title and legends come on top)."""
    spec: dict[str, Any] = {
        "title": title, "height": height, "autosize": {"type": "fit-x", "contains": "padding"},
        "layer": layers, "datasets": datasets,
    }
    if independent_colors:
        spec["resolve"] = {"scale": {"color": "independent"}}
    return spec


def removal_rules(data_name: str, events: pd.DataFrame, *, legend: bool = True) -> dict:
    """A layer with one vertical rule per removal event (rows of events_frame / removal_frame), coloured
    by group; `data_name` is its dataset's name in the chart's spec["datasets"]."""
    tooltip = [{"field": "name", "type": "nominal", "title": "block"}, {"field": "step", "type": "quantitative"},
               {"field": "group", "type": "nominal"}]
    if "sigma" in events.columns:
        tooltip.append({"field": "sigma", "type": "quantitative", "format": ".4g", "title": "frozen sigma"})
    return {
        "data": {"name": data_name},
        "mark": {"type": "rule", "strokeWidth": 1.5, "opacity": 0.55},
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            "color": {"field": "group", "type": "nominal", "scale": group_color_scale(),
                      "legend": {"title": "removal", "orient": "bottom"} if legend else None},
            "tooltip": tooltip,
        },
    }


def _events_data(events: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("step", "name", "group", "sigma") if c in events.columns]
    return events[cols].reset_index(drop=True)


def _y(field: str, log: bool, title: str | None = None, fmt: str | None = None) -> dict:
    y: dict[str, Any] = {"field": field, "type": "quantitative", "title": title,
                         "scale": {"type": "log" if log else "linear", "zero": False}}
    if fmt:
        y["axis"] = {"format": fmt}
    return y


def metric_chart(df: pd.DataFrame, *, title: str, log: bool = False, events: pd.DataFrame | None = None,
                 height: int = 180, color: str = "run") -> dict:
    """Lines of `value` over `step`, one per `color` (run), with removal rules layered behind them."""
    data = df[df["value"] > 0] if log else df
    line = {
        "data": {"name": "series"},
        "mark": {"type": "line", "strokeWidth": 1.5},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "step"},
            "y": _y("value", log),
            "color": {"field": color, "type": "nominal", "scale": {"range": RUN_COLORS},
                      "legend": {"title": None, "orient": "top"}},
            "tooltip": [{"field": color, "type": "nominal"}, {"field": "step", "type": "quantitative"},
                        {"field": "value", "type": "quantitative", "format": ".5g"}],
        },
    }
    datasets = {"series": data[["step", "value", color]].reset_index(drop=True)}
    layers = [line]
    if events is not None and not events.empty:
        layers = [removal_rules("removals", events, legend=False), line]
        datasets["removals"] = _events_data(events)
    return layered_chart(layers, datasets, title=title, height=height, independent_colors=True)


def sigma_chart(df: pd.DataFrame, *, log: bool = False, events: pd.DataFrame | None = None,
                height: int = 180) -> dict:
    """Each block's tracked sigma over the steps (sigma_frame rows), coloured by group, with removal rules."""
    data = df[df["sigma"] > 0] if log else df
    line = {
        "data": {"name": "sigma"},
        "mark": {"type": "line", "strokeWidth": 1, "opacity": 0.85},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "step"},
            "y": _y("sigma", log),
            "color": {"field": "group", "type": "nominal", "scale": group_color_scale(),
                      "legend": {"title": None, "orient": "top"}},
            "detail": {"field": "block", "type": "nominal"},
            "tooltip": [{"field": "block", "type": "nominal"}, {"field": "step", "type": "quantitative"},
                        {"field": "sigma", "type": "quantitative", "format": ".5g"}],
        },
    }
    datasets = {"sigma": data[["step", "block", "group", "sigma"]].reset_index(drop=True)}
    layers = [line]
    if events is not None and not events.empty:
        layers = [removal_rules("removals", events, legend=False), line]
        datasets["removals"] = _events_data(events)
    return layered_chart(layers, datasets, title="sigma of each LN block (frozen at removal)", height=height)


MODEL_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"]  # in model-set order: original blue, vanilla orange, LN-free green


def model_color(labels: Sequence[str], *, legend: bool = True, field: str = "model") -> Any:
    """The colour channel (alt.Color) of analysis charts: one colour per model, in the model set's
    order, the same on every chart and page."""
    import altair as alt  # local: altair costs 0.28 s CPU to import (measured); Schedule and Train use charts.py without it

    scale = alt.Scale(domain=list(labels), range=[MODEL_PALETTE[i % len(MODEL_PALETTE)] for i in range(len(labels))])
    return alt.Color(f"{field}:N", scale=scale, sort=list(labels),
                     legend=alt.Legend(title=None, orient="top") if legend else None)


def fit_chart(chart: Any, height: int) -> Any:
    """An Altair chart with `height` px of plot area (title, axes and legends come on top) and its
    width fitted to the page (draw with width="stretch")."""
    import altair as alt  # local: altair costs 0.28 s CPU to import (measured); Schedule and Train use charts.py without it

    return chart.properties(height=height, autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))
