"""The Train page's throughput line: recent tokens/s, TFLOP/s, MFU and the whole schedule's time."""

from __future__ import annotations

import math

import pytest

from pages._common.ui_data.metrics import step_frame
from pages._common.ui_data.throughput_view import throughput_caption, throughput_info


def _rows(mfu):
    rows = [{"type": "event", "kind": "throughput", "step": 0, "flops_per_token": 0.855e9,
             "device_name": "NVIDIA H100 80GB HBM3", "peak_bf16_tflops": 989.4, "n_devices": 2, "time": 0.0}]
    for s in range(1, 11):  # one step every 2 s, 100,000 tokens per step
        rows.append({"type": "step", "step": s, "loss": 3.0, "tokens_per_s": 50_000.0,
                     "tflops": 50_000 * 0.855e9 / 1e12, "mfu": mfu, "tokens": 100_000 * s, "time": 2.0 * s})
    return rows


def test_throughput_info_reports_mfu_and_the_whole_schedule():
    rows = _rows(50_000 * 0.855e9 / 1e12 / (2 * 989.4))
    info = throughput_info(rows, step_frame(rows), step=10, max_steps=100)
    assert info["tokens_per_s"] == 50_000.0
    assert info["tflops"] == pytest.approx(42.75)
    assert info["mfu"] == pytest.approx(42.75 / 1978.8)
    assert info["schedule_s"] == pytest.approx(200.0) and info["left_s"] == pytest.approx(180.0)
    text = throughput_caption(info)
    assert "50,000 tokens/s" in text and "42.8 TFLOP/s" in text and "MFU 2.2% of 2 x NVIDIA H100" in text
    assert "0.855 GFLOP/token" in text and "3 min 20 s" in text and "3 min 00 s left" in text


def test_cpu_runs_show_tokens_per_s_without_mfu():
    rows = _rows(None)
    rows[0].update(device_name="cpu", peak_bf16_tflops=None, n_devices=1)
    info = throughput_info(rows, step_frame(rows), step=10, max_steps=None)
    assert math.isnan(info["mfu"]) and info["schedule_s"] is None
    text = throughput_caption(info)
    assert "no MFU on cpu" in text and "MFU " not in text.replace("no MFU", "")
