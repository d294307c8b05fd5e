"""Charts of an energy report as inline SVG strings, drawn with matplotlib (the optional ``report`` extra).

Views only: every number comes from the report (see :mod:`.layer_views` for the per-kind split). The SVG
is made to be pasted into HTML: no XML prolog, no DOCTYPE, no metadata block, text kept as text, and
stable element ids, so the same report gives the same bytes.

>>> from .api import analyze
>>> svg = layer_chart(analyze("lenet5_bn"))
>>> svg.startswith("<svg") and "<metadata>" not in svg
True
"""
from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from adderconv.errors import AdderconvError

from .energy import EnergyReport
from .layer_views import GROUPS, align, class_split, energy_unit, kind_split, layer_label

__all__ = ["require_matplotlib", "new_figure", "to_svg", "styled", "layer_chart", "class_chart", "memory_chart",
           "COLORS"]

COLORS: dict[str, str] = {"mul": "#d1495b", "add": "#2e86ab", "acc": "#00798c", "cmp": "#66a182", "other": "#8d6a9f",
                          "memory": "#edae49"}
_RC = {"svg.fonttype": "none", "svg.hashsalt": "adderconv", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False, "axes.grid": True, "axes.grid.axis": "y", "grid.alpha": 0.3}


def require_matplotlib() -> Any:
    """Import matplotlib or raise a one-line error that names the extra to install."""
    try:
        import matplotlib.figure              # the class every chart draws on
    except ImportError:
        raise AdderconvError("the HTML report draws its charts with matplotlib, which is not installed: "
                             "pip install 'adderconv[report]'") from None
    return matplotlib


def new_figure(width: float, height: float):
    """A matplotlib Figure (no pyplot, no global state), laid out with constrained layout."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig) -> str:
    """The figure as an SVG string ready to inline in HTML (no prolog, DOCTYPE or metadata)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]                                  # drop the XML prolog and the DOCTYPE
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)


def styled(draw):
    """Run ``draw`` under the report's rc settings (they must hold while artists are created, too)."""
    import matplotlib

    require_matplotlib()
    with matplotlib.rc_context(_RC):
        return draw()


def layer_chart(report: EnergyReport, compare: EnergyReport | None = None) -> str:
    """Compute energy per layer in execution order, stacked by kind; with ``compare`` both models side by side
    (``compare`` hatched, on the left of each pair), layers aligned by name. Layers with no energy in any
    model are left out (the table lists them)."""
    pairs = [(a, b) for a, b in align(report.layers, compare.layers if compare else [])
             if (a is not None and a.energy_pj) or (b is not None and b.energy_pj)]

    def draw() -> str:
        peak = max([le.energy_pj for ab in pairs for le in ab if le is not None] or [0.0])
        div, unit = energy_unit(peak)
        n = max(len(pairs), 1)
        fig = new_figure(max(9.0, min(0.22 * n + 2, 40.0)), 4.2)
        ax = fig.add_subplot()
        width = 0.4 if compare is not None else 0.8
        sides = [(report, 0.0 if compare is None else width / 2, 1.0, None)]
        if compare is not None:
            sides.append((compare, -width / 2, 0.55, "////"))
        for side, (rep, offset, alpha, hatch) in enumerate(sides):
            bottom = [0.0] * len(pairs)
            for g in GROUPS:
                heights = [kind_split(rep, ab[side])[g] / div if ab[side] is not None else 0.0 for ab in pairs]
                if not any(heights):
                    continue
                label = g if side == 0 else None
                ax.bar([i + offset for i in range(len(pairs))], heights, width, bottom=bottom, color=COLORS[g],
                       alpha=alpha, hatch=hatch, edgecolor="white", linewidth=0.3, label=label)
                bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set_xticks(range(len(pairs)), [layer_label(a or b) for a, b in pairs], rotation=90, fontsize=7)
        ax.set_xlim(-0.6, len(pairs) - 0.4)
        ax.set_ylabel(f"compute energy ({unit})")
        handles, labels = ax.get_legend_handles_labels()
        if compare is not None:
            from matplotlib.patches import Patch

            handles += [Patch(facecolor="#999", label=report.model),
                        Patch(facecolor="#999", alpha=0.55, hatch="////", label=compare.model)]
            labels += [report.model, f"{compare.model} (hatched, left)"]
        ax.legend(handles, labels, ncols=len(labels), loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False,
                  fontsize=8)
        return to_svg(fig)

    return styled(draw)


def class_chart(report: EnergyReport, compare: EnergyReport | None = None) -> str:
    """Compute energy by operator class (conv, adder, norm, ...), stacked by kind, largest first (twelve at
    most); with ``compare`` its bar (hatched) sits under each of ``report``'s."""
    mine, theirs = class_split(report), class_split(compare) if compare else {}
    total = {t: max(sum(mine.get(t, {}).values()), sum(theirs.get(t, {}).values())) for t in {*mine, *theirs}}
    types = [t for t in sorted(total, key=lambda t: (-total[t], t)) if total[t]][:12]

    def draw() -> str:
        div, unit = energy_unit(max([*total.values(), 0.0]))
        fig = new_figure(5.6, 0.7 + 0.3 * max(len(types), 1) * (2 if compare else 1))
        ax = fig.add_subplot()
        ax.grid(axis="x", alpha=0.3)
        ax.grid(axis="y", visible=False)
        h = 0.4 if compare is not None else 0.7
        sides = [(mine, -h / 2 if compare is not None else 0.0, 1.0, None)]
        if compare is not None:
            sides.append((theirs, h / 2, 0.55, "////"))
        for side, (data, offset, alpha, hatch) in enumerate(sides):
            left = [0.0] * len(types)
            for g in GROUPS:
                widths = [data.get(t, {}).get(g, 0.0) / div for t in types]
                if any(widths):
                    ax.barh([i + offset for i in range(len(types))], widths, h, left=left, color=COLORS[g],
                            alpha=alpha, hatch=hatch, edgecolor="white", linewidth=0.3,
                            label=g if side == 0 else None)
                    left = [a + b for a, b in zip(left, widths)]
        ax.set_yticks(range(len(types)), types)
        ax.invert_yaxis()
        ax.set_xlabel(f"compute energy ({unit})")
        ax.legend(frameon=False, fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=len(GROUPS))
        return to_svg(fig)

    return styled(draw)


def memory_chart(reports: Sequence[EnergyReport]) -> str:
    """Compute vs memory energy, one stacked bar per model (reports priced with a memory level)."""
    def draw() -> str:
        div, unit = energy_unit(max([r.totals.energy_pj + r.totals.memory_pj for r in reports] or [0.0]))
        fig = new_figure(5.6, 0.9 + 0.45 * len(reports))
        ax = fig.add_subplot()
        ax.grid(axis="x", alpha=0.3)
        ax.grid(axis="y", visible=False)
        y = list(range(len(reports)))
        compute = [r.totals.energy_pj / div for r in reports]
        ax.barh(y, compute, 0.6, color=COLORS["add"], label="compute")
        ax.barh(y, [r.totals.memory_pj / div for r in reports], 0.6, left=compute, color=COLORS["memory"],
                label=f"memory ({reports[0].memory})")
        ax.set_yticks(y, [r.model for r in reports])
        ax.invert_yaxis()
        ax.set_xlabel(f"energy ({unit})")
        ax.legend(frameon=False, fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2)
        return to_svg(fig)

    return styled(draw)
