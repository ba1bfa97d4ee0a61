"""Table 1: mean CE of several models on several datasets, the best marked, LN-free gaps in brackets.

Rows are models, columns datasets. Within a group of rows (the paper groups by model size; one group
when no group is given) and for each dataset:

    best(group, ds) = min over the group's models of mean CE
    gap(m, ds)      = mean CE(m, ds) - best(group, ds)         shown for LN-free models only

Markdown shows the best value in bold and an LN-free model's cell as `3.0797 [+0.0671]`. The gap is
computed from the unrounded means and then rounded. CSV carries the numbers (mean, is-best flag, gap)
unformatted, for other programs.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TableEntry:
    """One evaluated (model, dataset) pair."""

    model: str
    dataset: str
    mean: float
    ln_free: bool = False
    group: str | None = None


@dataclass(frozen=True)
class Cell:
    mean: float
    best: bool
    gap: float | None  # mean - best of the group; None for models with LN


@dataclass
class CETable:
    models: list[str]
    datasets: list[str]
    groups: dict[str, str | None]
    ln_free: dict[str, bool]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def cell_text(self, model: str, dataset: str, digits: int = 4, bold: bool = True) -> str:
        c = self.cells.get((model, dataset))
        if c is None:
            return "-"
        text = f"{c.mean:.{digits}f}"
        if c.best and bold:
            text = f"**{text}**"
        if c.gap is not None:
            text += f" [{c.gap:+.{digits}f}]"
        return text

    def to_markdown(self, digits: int = 4) -> str:
        head = ["Model", *self.datasets]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for m in self.models:
            row = [m] + [self.cell_text(m, d, digits) for d in self.datasets]
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["model", "group", "ln_free"] + [f"{d}{s}" for d in self.datasets for s in ("", "_best", "_gap")])
        for m in self.models:
            row = [m, self.groups[m] or "", int(self.ln_free[m])]
            for d in self.datasets:
                c = self.cells.get((m, d))
                row += ["", "", ""] if c is None else [repr(c.mean), int(c.best), "" if c.gap is None else repr(c.gap)]
            w.writerow(row)
        return buf.getvalue()

    def to_dict(self) -> dict:
        return {"models": self.models, "datasets": self.datasets,
                "rows": [{"model": m, "group": self.groups[m], "ln_free": self.ln_free[m],
                          "cells": {d: (None if (c := self.cells.get((m, d))) is None else
                                        {"mean": c.mean, "best": c.best, "gap": c.gap}) for d in self.datasets}}
                         for m in self.models]}


def ce_table(entries: list[TableEntry]) -> CETable:
    """Build Table 1 from entries; models and datasets keep their first-seen order."""
    models: list[str] = []
    datasets: list[str] = []
    groups: dict[str, str | None] = {}
    ln_free: dict[str, bool] = {}
    means: dict[tuple[str, str], float] = {}
    for e in entries:
        if e.model not in groups:
            models.append(e.model)
            groups[e.model], ln_free[e.model] = e.group, e.ln_free
        elif groups[e.model] != e.group or ln_free[e.model] != e.ln_free:
            raise ValueError(f"model {e.model!r} appears with different group/ln_free flags")
        if e.dataset not in datasets:
            datasets.append(e.dataset)
        if (e.model, e.dataset) in means:
            raise ValueError(f"duplicate entry for ({e.model!r}, {e.dataset!r})")
        means[(e.model, e.dataset)] = float(e.mean)
    table = CETable(models=models, datasets=datasets, groups=groups, ln_free=ln_free)
    for d in datasets:
        best: dict[str | None, float] = {}
        for (m, dd), v in means.items():
            if dd == d:
                g = groups[m]
                best[g] = min(best.get(g, float("inf")), v)
        for (m, dd), v in means.items():
            if dd == d:
                b = best[groups[m]]
                table.cells[(m, d)] = Cell(mean=v, best=v == b, gap=(v - b) if ln_free[m] else None)
    return table
