"""Training curves: ``curves.html`` beside ``metrics.json`` each epoch, and TensorBoard scalars on request.

A view of the epoch history the trainer already keeps (``metrics.json``'s ``epochs``): train and validation
loss per epoch, and the validation metric (accuracy or PSNR) with the teacher's as a flat reference line
where there is a teacher. The page is self-contained (inline SVG drawn with matplotlib, the ``report``
extra); without matplotlib the run goes on and says in its notes why there is no ``curves.html``.
TensorBoard (``--tensorboard DIR``, the ``tensorboard`` extra) gets every number of each epoch's record.

>>> history = [{"epoch": 1, "train_loss": 1.2, "val_loss": 1.1, "val_acc": 0.61},
...            {"epoch": 2, "train_loss": 0.8, "val_loss": 0.9, "val_acc": 0.72}]
>>> page = curves_html(history, metric="acc", teacher=0.80, title="lenet5_bn_adder")
>>> page.startswith("<!DOCTYPE html>") and "teacher" in page
True
"""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import AdderconvError
from ..io import write_text

__all__ = ["curves_html", "EpochLog", "require_tensorboard"]

_CSS = ("body{font:14px/1.45 system-ui,sans-serif;color:#1d2733;margin:18px 24px;background:#f5f6f8}"
        ".row{display:flex;gap:16px;flex-wrap:wrap}.panel{background:#fff;border:1px solid #dde2e8;"
        "border-radius:8px;padding:8px 12px}.panel svg{max-width:100%;height:auto}table{border-collapse:collapse}"
        "th,td{padding:2px 10px;border-bottom:1px solid #e6e9ee;text-align:right}h1{font-size:20px}")


def require_tensorboard() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or a one-line error naming the extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AdderconvError("TensorBoard logging needs the tensorboard package: "
                             "pip install 'adderconv[tensorboard]'") from None
    return SummaryWriter


def _show(metric: str, v: float) -> str:
    return f"{100 * v:.2f}%" if metric == "acc" else f"{v:.2f} dB" if metric == "psnr" else f"{v:.4g}"


def _charts(history: Sequence[Mapping[str, Any]], metric: str, teacher: float | None) -> str:
    from adderconv.analysis.figures import COLORS, new_figure, styled, to_svg

    epochs = [rec["epoch"] for rec in history]
    scale = 100.0 if metric == "acc" else 1.0
    unit = "%" if metric == "acc" else "dB" if metric == "psnr" else ""

    def draw() -> str:
        fig = new_figure(10.0, 3.6)
        loss, score = fig.subplots(1, 2)
        loss.plot(epochs, [r["train_loss"] for r in history], "o-", color=COLORS["add"], label="train loss")
        loss.plot(epochs, [r["val_loss"] for r in history], "s--", color=COLORS["mul"], label="val loss")
        loss.set_xlabel("epoch")
        loss.set_ylabel("loss")
        loss.legend(frameon=False)
        key = f"val_{metric}"
        score.plot(epochs, [r[key] * scale for r in history], "o-", color=COLORS["add"], label=f"val {metric}")
        if all(f"train_{metric}" in r for r in history):
            score.plot(epochs, [r[f"train_{metric}"] * scale for r in history], ".:", color="#7a8794",
                       label=f"train {metric} (augmented batches)")
        if teacher is not None:
            score.axhline(teacher * scale, color=COLORS["cmp"], linestyle="--", label=f"teacher (val {metric})")
        score.set_xlabel("epoch")
        score.set_ylabel(f"{metric} ({unit})" if unit else metric)
        score.legend(frameon=False)
        for ax in (loss, score):
            ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
        return to_svg(fig)

    return styled(draw)


def curves_html(history: Sequence[Mapping[str, Any]], *, metric: str, teacher: float | None = None,
                title: str = "fine-tuning") -> str:
    """The page: the two charts and the epoch table. ``metric`` is ``acc`` or ``psnr`` (history key
    ``val_<metric>``); ``teacher`` is the teacher's validation value of it, drawn as a reference line."""
    if not history:
        raise ValueError("no epoch has finished yet: nothing to draw")
    e = html.escape
    cols = ["epoch", "lr", "train_loss", "val_loss", f"val_{metric}", "images_per_s"]
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_show(metric, r[c]) if c == f'val_{metric}' else f'{r[c]:.4g}'}</td>"
                                    if c in r else "<td></td>" for c in cols) + "</tr>" for r in history)
    last = history[-1]
    summary = (f"epoch {last['epoch']}: val {metric} {_show(metric, last[f'val_{metric}'])}"
               + (f", teacher {_show(metric, teacher)}" if teacher is not None else ""))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Training curves: {e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Training curves: {e(title)}</h1><p>{e(summary)}</p>"
            f'<div class="panel">{_charts(history, metric, teacher)}</div>'
            f'<h2>Epochs</h2><div class="panel"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div></body></html>\n")


class EpochLog:
    """What a run writes after each epoch besides ``metrics.json``: ``out/curves.html`` and TensorBoard.

    ``notes`` says what was skipped and why (e.g. no matplotlib), for the run's result.
    """

    def __init__(self, out: Path | None, *, metric: str, teacher: float | None = None,
                 tensorboard: str | None = None, title: str = "fine-tuning") -> None:
        self.out, self.metric, self.teacher, self.title = out, metric, teacher, title
        self.notes: list[str] = []
        self._writer = require_tensorboard()(log_dir=str(tensorboard)) if tensorboard else None
        if out is not None:
            try:
                from adderconv.analysis.figures import require_matplotlib
                require_matplotlib()
            except AdderconvError:
                self.out = None
                self.notes.append("curves.html not written: it needs matplotlib (pip install 'adderconv[report]')")

    def epoch(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Log the last epoch of ``history`` and redraw the curves from all of it."""
        rec = history[-1]
        if self._writer is not None:
            for key, value in rec.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, rec["epoch"])
            if self.teacher is not None:
                self._writer.add_scalar(f"teacher_val_{self.metric}", self.teacher, rec["epoch"])
            self._writer.flush()
        if self.out is not None:
            page = curves_html(history, metric=self.metric, teacher=self.teacher, title=self.title)
            write_text(self.out / "curves.html", page)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
