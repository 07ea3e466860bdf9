"""The trainer's view, from stock ipywidgets plus one small anywidget: choices,
Run/Stop, a live learning curve (one trace per run, one point per finished
fold), the runs table (a click on a header sorts, a click on a row picks the
run), and a confusion matrix whose cells are buttons that show the images
behind them. Everything below the table follows the picked run."""

from __future__ import annotations

import base64
import html
import threading
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as w
import traitlets

from ..exceptions import ImageLoadError, MlnbError

# (column of the runs table, title shown, format)
RUN_COLUMNS = (
    ("run", "run", "{}"),
    ("algorithm", "head", "{}"),
    ("features", "features", "{}"),
    ("options", "options", "{}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("accuracy_std", "± std", "{:.3f}"),
    ("macro_f1", "macro F1", "{:.3f}"),
    ("log_loss", "log loss", "{:.3f}"),
    ("folds", "folds", "{}"),
    ("n", "rows", "{}"),
    ("train_seconds", "seconds", "{:.1f}"),
    ("created", "created", "{}"),
)


class RunsTable(anywidget.AnyWidget):
    """Every run of the workspace; sorted in the kernel by ``sort_by``."""

    _esm = Path(__file__).with_name("runs_table.js")
    _css = Path(__file__).with_name("runs_table.css")

    columns = traitlets.List([{"name": n, "title": t} for n, t, _ in RUN_COLUMNS]).tag(sync=True)
    rows = traitlets.List().tag(sync=True)
    sort_by = traitlets.Unicode("accuracy").tag(sync=True)
    descending = traitlets.Bool(True).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._frame: Any = None
        self._pickable: set[str] = set()
        self.observe(lambda _ch: self._draw(), names=["sort_by", "descending"])

    def show(self, frame: Any, pickable: set[str]) -> None:
        self._frame, self._pickable = frame, set(pickable)
        self._draw()

    def _draw(self) -> None:
        df = self._frame
        if df is None:
            return
        if self.sort_by in df.columns and df.height:
            df = df.sort(self.sort_by, descending=self.descending, nulls_last=True)
        fmt = {n: f for n, _t, f in RUN_COLUMNS}
        rows = []
        for r in df.iter_rows(named=True):
            row = {n: ("" if r.get(n) is None else fmt[n].format(r[n])) for n in fmt}
            row["created"] = row["created"].replace("T", " ")[5:16]  # MM-DD HH:MM
            row["options"] = "" if row["options"] == "{}" else row["options"]
            row["_pickable"] = r["run"] in self._pickable
            rows.append(row)
        self.rows = rows


def _table(df: Any, limit: int = 50) -> str:
    head = "".join(f"<th style='padding:2px 8px'>{html.escape(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(f'{v:.3f}' if isinstance(v, float) else str(v))}</td>" for v in row) + "</tr>"
        for row in df.head(limit).iter_rows()
    )
    return f"<table class='mlnb-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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


def _error(exc: Exception) -> str:
    return f"<span style='color:#b71c1c'>{html.escape(str(exc))}</span>"


def trainer_view(trainer: Any) -> Any:
    wide = {"description_width": "initial"}
    feats = w.SelectMultiple(options=trainer.features, value=tuple(trainer.features[:1]), description="features", style=wide)
    algos = w.SelectMultiple(options=trainer.algorithms, value=("logistic",), description="heads", style=wide)
    options = w.Text(placeholder="options, e.g. C=0.5, k=7; a search: C=[0.01, 0.1, 1]", description="options", style=wide)
    run_btn = w.Button(description="Run CV", button_style="primary", layout=w.Layout(width="auto"))
    stop_btn = w.Button(description="Stop", button_style="warning", disabled=True, layout=w.Layout(width="auto"))
    progress = w.IntProgress(min=0, max=1, value=0, description="folds", style=wide)
    status = w.HTML()
    runs = RunsTable()
    runs.show(trainer.runs, set(trainer.evaluations))
    run_pick = w.Dropdown(options=[], description="run", style=wide, layout=w.Layout(width="auto"))
    name = w.Text(placeholder="SQL name for the head")
    register_btn = w.Button(description="Register as SQL function", layout=w.Layout(width="auto"))
    per_class = w.HTML()
    matrix = w.VBox()
    cell_view = w.HTML()
    errors = w.HTML()
    trials = w.HTML()  # the trials of the picked run, when it was a search
    error_box = w.HTML()
    curve = _curve_widget()
    picked_cell: dict[str, Any] = {"cell": None}

    def show_run(run_id: str | None) -> None:
        if not run_id:
            return
        runs.selected = run_id
        rec = trainer.meta.get(run_id, {})
        if "trials" in rec:
            df = trainer.trials(run_id).drop("params")  # each option has its own column
            if df["error"].null_count() == df.height:
                df = df.drop("error")
            trials.value = (f"<b>trials of this search</b> <span style='color:#666'>({html.escape(rec['search'])}; the run is the best, "
                            "<code>trainer.trials(run)</code> gives them as a frame)</span>" + _table(df, limit=200))
        else:
            trials.value = ""
        try:
            per_class.value = _table(trainer.per_class(run_id))
            cm = trainer.confusion(run_id)
        except MlnbError as exc:
            error_box.value = _error(exc)
            return
        labels = cm.get_column("true").to_list()
        width = f"{max(48, 9 * max(len(c) for c in labels) + 16)}px"
        head = [w.Label("true \\ predicted", layout=w.Layout(width="120px"))]
        rows = [w.HBox(head + [w.Label(c, layout=w.Layout(width=width)) for c in labels])]
        top = max(1, max(int(v) for c in labels for v in cm.get_column(c).to_list()))
        for i, t in enumerate(labels):
            btns = []
            for p in labels:
                n = int(cm.get_column(p)[i])
                b = w.Button(description=str(n), layout=w.Layout(width=width), tooltip=f"true {t}, predicted {p}")
                b.style.button_color = f"rgba(25,118,210,{0.1 + 0.9 * n / top:.2f})" if n else "#fafafa"
                b.on_click(lambda _b, t=t, p=p: show_cell(run_id, t, p))
                btns.append(b)
            rows.append(w.HBox([w.Label(t, layout=w.Layout(width="120px")), *btns]))
        matrix.children = rows
        worst = trainer.worst_errors(run_id)
        errors.value = "<b>worst errors</b><br>" + _gallery(trainer, worst, lambda r: f"{r['true']}→{r['predicted']} {r['confidence']:.2f}")
        # The cell gallery follows the picked run: the same cell of this run's matrix, or nothing.
        if picked_cell["cell"] is not None and all(c in labels for c in picked_cell["cell"]):
            show_cell(run_id, *picked_cell["cell"])
        else:
            cell_view.value = ""

    def show_cell(run_id: str, t: str, p: str) -> None:
        picked_cell["cell"] = (t, p)
        df = trainer.cell(run_id, t, p)
        rec = trainer.meta.get(run_id, {})
        who = f"{rec.get('algorithm', '')} on {rec.get('features', '')}"
        cell_view.value = (
            f"<b>{html.escape(who)}: true {html.escape(t)}, predicted {html.escape(p)}: {df.height} rows</b><br>"
            + _gallery(trainer, df, lambda r: f"{r['confidence']:.2f}")
        )

    def refresh_runs(ids: list[str]) -> None:
        runs.show(trainer.runs, set(trainer.evaluations))
        meta = trainer.meta
        run_pick.options = [
            (f"{meta[r]['algorithm']} · {meta[r]['features']} · accuracy {meta[r]['accuracy']:.3f}", r) for r in trainer.evaluations
        ]
        if trainer.evaluations:
            # The best run of this trainer is the one looked at first.
            run_pick.value = max(trainer.evaluations, key=lambda r: (meta[r]["accuracy"], -meta[r]["log_loss"]))

    def work() -> None:
        chosen_f, chosen_a = list(feats.value), list(algos.value)
        try:
            opts = _parse_options(options.value)
            n_trials = sum(_trial_count(a, opts) for a in chosen_a)
        except MlnbError as exc:
            error_box.value = _error(exc)
            run_btn.disabled, stop_btn.disabled = False, True
            return
        total = len(chosen_f) * n_trials * trainer.folds
        progress.max, progress.value = max(1, total), 0
        done = {"n": 0, "last": 0}

        def on_fold(i: int, k: int, m: dict[str, Any]) -> None:
            done["n"] += 1
            progress.value = min(progress.max, done["n"])
            new_run = i <= done["last"] or done["n"] == 1
            done["last"] = i
            _append_point(curve, i, m["accuracy"], new_trace=new_run)

        try:
            ids = trainer.run_all(features=chosen_f, algorithms=chosen_a, options=opts, progress=on_fold)
            error_box.value = ""
        except MlnbError as exc:
            ids = []
            error_box.value = _error(exc)
        _name_traces(curve, [name for r in ids for name in _trace_names(trainer.meta[r])])
        refresh_runs(ids)
        status.value = html.escape(trainer.status)
        run_btn.disabled, stop_btn.disabled = False, True

    def on_run(_b: Any) -> None:
        run_btn.disabled, stop_btn.disabled = True, False
        status.value = "running…"
        threading.Thread(target=work, daemon=True).start()

    def on_register(_b: Any) -> None:
        try:
            if not run_pick.value:
                raise MlnbError("Run a cross-validation first: there is no run to register.")
            trainer.register(run_pick.value, name.value.strip())
            status.value = html.escape(trainer.status)
            error_box.value = ""
        except MlnbError as exc:
            error_box.value = _error(exc)

    def on_table_pick(change: Any) -> None:
        if change["new"] in trainer.evaluations and run_pick.value != change["new"]:
            run_pick.value = change["new"]

    run_btn.on_click(on_run)
    stop_btn.on_click(lambda _b: trainer.stop())
    register_btn.on_click(on_register)
    run_pick.observe(lambda ch: show_run(ch["new"]), names="value")
    runs.observe(on_table_pick, names="selected")
    box = w.VBox(
        [
            w.HBox([feats, algos, w.VBox([options, w.HBox([run_btn, stop_btn]), progress])]),
            status, error_box, curve,
            w.HTML("<b>runs</b> <span style='color:#666'>(click a header to sort, a row to look inside the run)</span>"), runs,
            trials, w.HBox([run_pick, name, register_btn]), per_class, matrix, cell_view, errors,
        ]
    )  # fmt: skip
    box.add_class("mlnb-trainer")
    box._mlnb = {"run": on_run, "work": work, "show_run": show_run, "show_cell": show_cell, "feats": feats, "algos": algos, "options": options,
                 "run_pick": run_pick, "name": name, "register": on_register, "matrix": matrix, "cell_view": cell_view,
                 "runs": runs, "errors": errors, "curve": curve, "error_box": error_box, "trials": trials}  # fmt: skip
    return box


def _parse_options(text: str) -> dict[str, Any]:
    """``C=0.5, k=7`` -> {"C": 0.5, "k": 7}; ``C=[0.01, 0.1], search=random`` -> a list (a search) and
    a string. Each head takes the options it knows."""
    out: dict[str, Any] = {}
    parts, depth, cur = [], 0, ""
    for ch in text:  # commas inside [...] belong to a list
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in filter(None, (p.strip() for p in parts)):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise MlnbError(f"Options are name=value pairs separated by commas; {part!r} is not.")
        value = value.strip()
        if value.startswith("["):
            if not value.endswith("]"):
                raise MlnbError(f"The list for option {key.strip()} has no closing ]: {part!r}.")
            out[key.strip()] = [_value(v) for v in value[1:-1].split(",") if v.strip()]
        else:
            out[key.strip()] = _value(value)
    return out


def _value(text: str) -> Any:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text.strip("'\"")


def _trial_count(algo: str, options: dict[str, Any]) -> int:
    """How many heads one algorithm's run trains on one feature column (a search's trials, else 1)."""
    from ..heads._search import plan_search
    from .trainer import _options_for

    plan = plan_search(algo, _options_for(algo, options))
    return len(plan.candidates) if plan is not None else 1


def _trace_names(rec: dict[str, Any]) -> list[str]:
    """The learning-curve traces a run drew: one, or one per trial of a search."""
    base = f"{rec['algorithm']} · {rec['features']}"
    if "trials" not in rec:
        return [base]
    return [f"{base} · " + ", ".join(f"{k}={v}" for k, v in t["params"].items()) for t in rec["trials"] if t["error"] is None]


def _curve_widget() -> Any:
    """A plotly FigureWidget when plotly is there (points are appended, never redrawn), else an HTML log."""
    try:
        import plotly.graph_objects as go

        fig = go.FigureWidget()
        fig.update_layout(
            height=240, margin=dict(l=50, r=10, t=20, b=40), xaxis_title="fold", yaxis_title="accuracy",
            xaxis=dict(dtick=1), yaxis=dict(range=[0, 1.05]), showlegend=True,
        )  # fmt: skip
        return fig
    except Exception:  # noqa: BLE001 - plotly missing or without widget support
        return w.HTML()


def _append_point(curve: Any, x: float, y: float, *, new_trace: bool = False) -> None:
    """Each run is its own trace, added with its first point: plotly 6.0's FigureWidget never drew
    points restyled into a trace that was created empty (axes, no line: issue 12)."""
    if hasattr(curve, "data"):
        if new_trace or not curve.data:
            curve.add_scatter(x=[x], y=[y], mode="lines+markers", name=f"run {len(curve.data) + 1}")
            return
        tr = curve.data[-1]
        with curve.batch_update():
            tr.x = (*(tr.x or ()), x)
            tr.y = (*(tr.y or ()), y)
    else:
        curve.value += f"fold {x}: accuracy {y:.3f}<br>"


def _name_traces(curve: Any, names: list[str]) -> None:
    if hasattr(curve, "data") and names:
        for tr, label in zip(curve.data[-len(names) :], names):
            tr.name = label
