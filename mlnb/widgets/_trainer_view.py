"""The trainer's view, from stock ipywidgets: choices, Run/Stop, a live
learning curve that appends one point per fold, the runs table, and a
confusion matrix whose cells are buttons that show the images behind them."""

from __future__ import annotations

import base64
import html
import threading
from typing import Any

import ipywidgets as w

from ..exceptions import ImageLoadError, MlnbError


def _table(df: Any, limit: int = 50) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(f'{v:.4f}' if isinstance(v, float) else str(v))}</td>" for v in row) + "</tr>"
        for row in df.head(limit).iter_rows()
    )
    return f"<table class='mlnb-runs'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _gallery(trainer: Any, df: Any, caption: Any) -> str:
    from ..images import thumbnail

    if trainer.image is None:
        return _table(df)
    cells = []
    for row in df.head(24).iter_rows(named=True):
        try:
            src = "data:image/jpeg;base64," + base64.b64encode(thumbnail(row[trainer.image], 64)).decode()
            img = f"<img src='{src}' width=64 height=64>"
        except ImageLoadError:
            img = "<div style='width:64px;height:64px;background:#eee'></div>"
        cells.append(f"<div style='display:inline-block;margin:2px;text-align:center;font-size:10px'>{img}<br>{html.escape(caption(row))}</div>")
    return "".join(cells)


def trainer_view(trainer: Any) -> Any:
    feats = w.SelectMultiple(options=trainer.features, value=tuple(trainer.features[:1]), description="features")
    algos = w.SelectMultiple(options=trainer.algorithms, value=("logistic",), description="heads")
    options = w.Text(placeholder="options, e.g. C=0.5, k=7", description="options")
    run_btn = w.Button(description="Run CV", button_style="primary")
    stop_btn = w.Button(description="Stop", button_style="warning", disabled=True)
    progress = w.IntProgress(min=0, max=1, value=0, description="folds")
    status = w.HTML()
    runs = w.HTML(_table(trainer.runs))
    run_pick = w.Dropdown(options=[], description="run")
    name = w.Text(placeholder="SQL name for the head")
    register_btn = w.Button(description="Register as SQL function")
    per_class = w.HTML()
    matrix = w.VBox()
    cell_view = w.HTML()
    errors = w.HTML()
    error_box = w.HTML()
    curve = _curve_widget()

    def show_run(run_id: str | None) -> None:
        if not run_id:
            return
        try:
            per_class.value = _table(trainer.per_class(run_id))
            cm = trainer.confusion(run_id)
        except MlnbError as exc:
            error_box.value = f"<span style='color:#b71c1c'>{html.escape(str(exc))}</span>"
            return
        labels = cm.get_column("true").to_list()
        rows = [w.HBox([w.Label("true \\ pred", layout=w.Layout(width="90px"))] + [w.Label(c, layout=w.Layout(width="48px")) for c in labels])]
        top = max(1, max(int(v) for c in labels for v in cm.get_column(c).to_list()))
        for i, t in enumerate(labels):
            btns = []
            for p in labels:
                n = int(cm.get_column(p)[i])
                b = w.Button(description=str(n), layout=w.Layout(width="48px"), tooltip=f"true {t}, predicted {p}")
                b.style.button_color = f"rgba(25,118,210,{0.1 + 0.9 * n / top:.2f})" if n else "#fafafa"
                b.on_click(lambda _b, t=t, p=p: show_cell(run_id, t, p))
                btns.append(b)
            rows.append(w.HBox([w.Label(t, layout=w.Layout(width="90px")), *btns]))
        matrix.children = rows
        worst = trainer.worst_errors(run_id)
        errors.value = "<b>worst errors</b><br>" + _gallery(trainer, worst, lambda r: f"{r['true']}→{r['predicted']} {r['confidence']:.2f}")

    def show_cell(run_id: str, t: str, p: str) -> None:
        df = trainer.cell(run_id, t, p)
        cell_view.value = f"<b>true {html.escape(t)}, predicted {html.escape(p)}: {df.height} rows</b><br>" + _gallery(trainer, df, lambda r: f"{r['confidence']:.2f}")

    def work() -> None:
        chosen_f, chosen_a = list(feats.value), list(algos.value)
        total = len(chosen_f) * len(chosen_a) * trainer.folds
        progress.max, progress.value = max(1, total), 0
        done = {"n": 0}

        def on_fold(i: int, k: int, m: dict[str, Any]) -> None:
            done["n"] += 1
            progress.value = min(progress.max, done["n"])
            _append_point(curve, done["n"], m["accuracy"])

        try:
            opts = _parse_options(options.value)
            ids = trainer.run_all(features=chosen_f, algorithms=chosen_a, options=opts, progress=on_fold)
            error_box.value = ""
        except MlnbError as exc:
            ids = []
            error_box.value = f"<span style='color:#b71c1c'>{html.escape(str(exc))}</span>"
        runs.value = _table(trainer.runs)
        run_pick.options = [(f"{trainer.meta[r]['algorithm']} · {trainer.meta[r]['features']} · {trainer.meta[r]['accuracy']:.3f}", r) for r in trainer.evaluations]
        if ids:
            run_pick.value = ids[-1]
        status.value = html.escape(trainer.status)
        run_btn.disabled, stop_btn.disabled = False, True

    def on_run(_b: Any) -> None:
        run_btn.disabled, stop_btn.disabled = True, False
        status.value = "running…"
        threading.Thread(target=work, daemon=True).start()

    def on_register(_b: Any) -> None:
        try:
            trainer.register(run_pick.value, name.value.strip())
            status.value = html.escape(trainer.status)
            error_box.value = ""
        except MlnbError as exc:
            error_box.value = f"<span style='color:#b71c1c'>{html.escape(str(exc))}</span>"

    run_btn.on_click(on_run)
    stop_btn.on_click(lambda _b: trainer.stop())
    register_btn.on_click(on_register)
    run_pick.observe(lambda ch: show_run(ch["new"]), names="value")
    box = w.VBox(
        [
            w.HBox([feats, algos, w.VBox([options, run_btn, stop_btn, progress])]),
            status, error_box, curve, w.HTML("<b>runs</b>"), runs,
            w.HBox([run_pick, name, register_btn]), per_class, matrix, cell_view, errors,
        ]
    )
    box.add_class("mlnb-trainer")
    box._mlnb = {"run": on_run, "work": work, "show_run": show_run, "show_cell": show_cell, "feats": feats, "algos": algos, "options": options,
                 "run_pick": run_pick, "name": name, "register": on_register, "matrix": matrix, "cell_view": cell_view,
                 "runs": runs, "errors": errors, "curve": curve, "error_box": error_box}
    return box


def _parse_options(text: str) -> dict[str, Any]:
    """``C=0.5, k=7`` -> {"C": 0.5, "k": 7}; each head takes the options it knows."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise MlnbError(f"Options are name=value pairs separated by commas; {part!r} is not.")
        v: Any = value.strip()
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                continue
        out[key.strip()] = v
    return out


def _curve_widget() -> Any:
    """A plotly FigureWidget when plotly is there (points are appended, never redrawn), else an HTML log."""
    try:
        import plotly.graph_objects as go

        fig = go.FigureWidget(data=[go.Scatter(x=[], y=[], mode="lines+markers", name="fold accuracy")])
        fig.update_layout(height=220, margin=dict(l=40, r=10, t=20, b=30), xaxis_title="fold", yaxis_title="accuracy")
        return fig
    except Exception:  # noqa: BLE001 - plotly missing or without widget support
        return w.HTML()


def _append_point(curve: Any, x: float, y: float) -> None:
    if hasattr(curve, "data"):
        tr = curve.data[0]
        with curve.batch_update():
            tr.x = (*tr.x, x)
            tr.y = (*tr.y, y)
    else:
        curve.value += f"{x}: {y:.3f}<br>"
