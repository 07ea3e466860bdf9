"""The labeler's controller: all state and logic, no browser needed.

The view (:class:`mlnb.widgets._labeler_view.LabelerView`) draws each page
from one message (item ids, their thumbnails keyed by id, their tags) and
every click or key it sends back names the item ids it acted on; an action
on an item that is not on the page any more is refused, never re-aimed.
A new ranking from active learning waits for the next page (or ``r``), so a
page never reorders while a person looks at it. Tests drive this class the
same way. Every label is in the label store (on disk, fsync'ed) before the
state here changes, so what the view shows as saved is saved.
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass
from typing import Any

from ..exceptions import MlnbError
from ..labels import get_label_store
from ._base import Controller

KEYS_HELP = (
    "the key on each class button labels the selection (digit classes: the digit itself; otherwise 1-9, 0 by position) · Enter: accept the suggestion · Space: skip · "
    "u: unsure · arrows: move · shift+arrows: extend the selection · Ctrl+Z / Ctrl+Shift+Z: undo / redo · "
    "f: focus mode · r: use the new ranking now · k: keep the current label (reviewing label issues) · ?: these keys"
)


@dataclass(frozen=True)
class ItemState:
    kind: str | None = None  # None (unlabelled), "label", "unsure", "skip"
    label: Any = None  # a class name, or a tuple of names in multi-label mode


_EMPTY = ItemState()


class Labeler(Controller):
    """Label the images of a frame, a page or one item at a time.

    Parameters
    ----------
    frame : a Polars, pandas or Arrow frame.
    image : the column with image paths, URLs or bytes.
    classes : the class names; more can be added while labelling.
    multi_label : an item may carry several classes; a class key toggles it.
    item : the column that identifies an item (default: ``image``).
    dataset : the name labels are stored under (default: derived from the items,
        so reopening on the same data resumes).
    """

    def __init__(
        self,
        frame: Any,
        *,
        image: str = "path",
        classes: list[str] | tuple[str, ...] = (),
        multi_label: bool = False,
        item: str | None = None,
        dataset: str | None = None,
        page_size: int = 48,
        thumb_size: int = 96,
        features: str | None = None,
        retrain_every: int = 10,
        strategy: str = "entropy",
        random_share: float = 0.2,
        review: Any = None,
    ) -> None:
        from .._frames import to_polars

        df = to_polars(frame)
        self.frame = df
        for col in {image, item or image}:
            if col not in df.columns:
                raise MlnbError(f"No column {col!r} in the frame; columns: {', '.join(df.columns)}.")
        if df.height == 0:
            raise MlnbError("The frame is empty: there is nothing to label.")
        self.image = image
        self.item_col = item or image
        self.items: list[str] = [str(v) for v in df.get_column(self.item_col).to_list()]
        self.classes: list[str] = [str(c) for c in classes]
        self.multi_label = multi_label
        self.dataset = dataset or _dataset_id(self.item_col, self.items)
        self.page_size = page_size
        self.thumb_size = thumb_size
        self.features = features
        self.retrain_every = retrain_every
        self.strategy = strategy
        self.random_share = random_share
        self.store = get_label_store()
        self.state: dict[str, ItemState] = {}
        self._resume()
        self.order: list[int] = list(range(len(self.items)))
        self.cursor = next((i for i, it in enumerate(self.items) if it not in self.state), 0)
        self.selection: set[int] = {self.cursor}
        self.anchor = self.cursor
        self.page = self.cursor // self.page_size
        self.focus = False
        self.show_help = False
        self.status = ""
        self.suggestions: dict[str, tuple[str, float]] = {}
        self.cv_score: float | None = None
        self.head_info = ""
        self._undo: list[list[tuple[str, ItemState, ItemState]]] = []
        self._redo: list[list[tuple[str, ItemState, ItemState]]] = []
        self._since_train = 0
        self._pending: list[int] | None = None  # a new ranking, used from the next page on
        self._token = 0
        self.clicks_seen = 0
        self._train_lock = threading.Lock()
        # One lock for every state change: the retrain thread and the view's messages take turns.
        self.lock = threading.RLock()
        self._listeners: list[Any] = []
        #: Items under review (suspected label errors): item -> (given label, suggested label, score).
        self.reviews: dict[str, tuple[str, str, float | None]] = {}
        if review is not None:
            self.review(review)

    # -- persistence ----------------------------------------------------
    def _resume(self) -> None:
        current = self.store.current(self.dataset)
        known = set(self.items)
        for row in current.iter_rows(named=True):
            if row["item"] not in known:
                continue
            label = tuple(row["labels"]) if row["labels"] is not None else row["label"]
            self.state[row["item"]] = ItemState(row["kind"], label)
            for c in (label if isinstance(label, tuple) else (label,)):
                if c is not None and c not in self.classes:
                    self.classes.append(c)

    def _write(self, changes: list[tuple[str, ItemState]], *, record: bool = True) -> None:
        """Persist first, then change state; ``changes`` are (item, new state)."""
        groups: dict[ItemState, list[str]] = {}
        for it, new in changes:
            groups.setdefault(new, []).append(it)
        for new, its in groups.items():
            kind = new.kind or "clear"
            label = list(new.label) if isinstance(new.label, tuple) else new.label
            self.store.add(self.dataset, its, label, kind=kind)
        undo = [(it, self.state.get(it, _EMPTY), new) for it, new in changes]
        for it, new in changes:
            if new.kind is None:
                self.state.pop(it, None)
            else:
                self.state[it] = new
        if record:
            self._undo.append(undo)
            self._redo.clear()
        n = len(changes)
        self.status = f"saved {n} label{'s' if n != 1 else ''}"
        self._changed()

    # -- the page on screen -------------------------------------------------
    def page_ids(self, page: int | None = None) -> list[str]:
        """The item ids of a page, in order (the current page by default)."""
        page = self.page if page is None else page
        start = page * self.page_size
        return [self.items[i] for i in self.order[start : start + self.page_size]]

    def _on_page(self, items: list[str]) -> list[int]:
        """Positions of items the view named; refuses items that are not on the current page."""
        where = {it: self.page * self.page_size + k for k, it in enumerate(self.page_ids())}
        gone = [it for it in items if it not in where]
        if gone:
            raise MlnbError(
                f"{len(gone)} of the tiles you acted on {'is' if len(gone) == 1 else 'are'} no longer on this page "
                "(the page changed): nothing was saved. Look again and press the key on the tile you see."
            )
        return [where[it] for it in items]

    def adopt(self, items: list[str], cursor: str | None = None) -> None:
        """Make the selection the items the view drew as selected (ids), before a key acts on them."""
        if not items:
            raise MlnbError("Nothing is selected: click a tile first.")
        pos = self._on_page(list(items))
        self.selection = set(pos)
        self.cursor = self._on_page([cursor])[0] if cursor is not None and cursor in items else pos[-1]

    # -- selection --------------------------------------------------------
    def click(self, pos: int, *, shift: bool = False, ctrl: bool = False, item: str | None = None) -> None:
        """A click on the item at ``pos`` of the current order (shift: range, ctrl: toggle).

        ``item`` (the id the view drew there) wins over ``pos`` and must be on the current page."""
        if item is not None:
            pos = self._on_page([item])[0]
        self._check_pos(pos)
        if shift:
            lo, hi = sorted((self.anchor, pos))
            self.selection = set(range(lo, hi + 1))
        elif ctrl:
            self.selection ^= {pos}
            self.anchor = pos
        else:
            self.selection = {pos}
            self.anchor = pos
        self.cursor = pos
        self._changed()

    def drag(self, start: int, end: int, *, items: tuple[str, str] | None = None) -> None:
        """A drag from one item to another selects the range (``items``: the ids dragged from and to)."""
        if items is not None:
            start, end = self._on_page(list(items))
        self._check_pos(start)
        self._check_pos(end)
        lo, hi = sorted((start, end))
        self.selection = set(range(lo, hi + 1))
        self.anchor, self.cursor = start, end
        self._changed()

    def move(self, delta: int, *, extend: bool = False) -> None:
        pos = max(0, min(len(self.order) - 1, self.cursor + delta))
        if pos // self.page_size != self.page and self._pending is not None:
            self.apply_ranking(keep_page=True)
            pos = max(0, min(len(self.order) - 1, self.cursor + delta))
        if extend:
            lo, hi = sorted((self.anchor, pos))
            self.selection = set(range(lo, hi + 1))
        else:
            self.selection = {pos}
            self.anchor = pos
        self.cursor = pos
        self.page = pos // self.page_size
        self._changed()

    def _check_pos(self, pos: int) -> None:
        if not 0 <= pos < len(self.order):
            raise MlnbError(f"No item at position {pos}.")

    def selected_items(self) -> list[str]:
        return [self.items[self.order[p]] for p in sorted(self.selection)]

    # -- labelling ----------------------------------------------------------
    def label(self, cls: str | int, items: list[str] | None = None) -> None:
        """Label the selection (or ``items``, ids on the current page) with a class name or its 0-based index."""
        name = self._class_name(cls)
        if items is not None:
            self.adopt(items)
        targets = self.selected_items()
        if self.multi_label:
            changes = []
            for it in targets:
                cur = self.state.get(it, _EMPTY)
                have = set(cur.label) if cur.kind == "label" and isinstance(cur.label, tuple) else set()
                have ^= {name}
                changes.append((it, ItemState("label", tuple(sorted(have))) if have else _EMPTY))
        else:
            changes = [(it, ItemState("label", name)) for it in targets]
        self._write(changes)
        self._after_labels(len(changes), reviewed=bool(targets) and all(it in self.reviews for it in targets) and not self.multi_label)

    def mark(self, kind: str, items: list[str] | None = None) -> None:
        """Mark the selection (or ``items``) ``unsure`` or ``skip``."""
        if kind not in ("unsure", "skip"):
            raise MlnbError("mark() takes 'unsure' or 'skip'.")
        if items is not None:
            self.adopt(items)
        self._write([(it, ItemState(kind, None)) for it in self.selected_items()])
        if not self.multi_label:
            self.next_unlabelled()

    def accept_suggestion(self) -> None:
        """Label the selection with its suggestion: the suggested label of an item under review,
        else the active-learning head's prediction."""
        changes = []
        for it in self.selected_items():
            sug = self.reviews[it][1] if it in self.reviews else self.suggestions.get(it, (None,))[0]
            if sug is not None:
                changes.append((it, ItemState("label", self._known_class(sug))))
        if not changes:
            self.status = "no suggestion for the selection yet"
            self._changed()
            return
        self._write(changes)
        self._after_labels(len(changes), reviewed=all(it in self.reviews for it, _ in changes))

    def keep_label(self) -> None:
        """Reviewing label issues: keep the current label of the selected items (written to the
        label store as given), and go on to the next item."""
        changes = [(it, ItemState("label", self._known_class(self._current(it)))) for it in self.selected_items() if it in self.reviews]
        if not changes:
            self.status = "k keeps the label of an item under review; this one is not"
            self._changed()
            return
        self._write(changes)
        self._after_labels(len(changes), reviewed=True)

    def _current(self, item: str) -> Any:
        """The label an item has now: its label in the store, else (under review) the given one."""
        st = self.state.get(item, _EMPTY)
        if st.kind == "label":
            return st.label
        return self.reviews[item][0] if item in self.reviews else None

    def _known_class(self, name: Any) -> str:
        name = str(name)
        if name not in self.classes:
            self.classes.append(name)
        return name

    def review(self, issues: Any, *, item: str | None = None, label: str = "given_label",
               suggested: str = "suggested_label", score: str = "label_quality") -> None:
        """Walk suspected label errors, most suspicious first.

        ``issues`` is a frame such as ``mlnb.label_issues(...)`` gives (or a ``%%mlsql`` result of
        ``label_issues``): a column naming the item (``item``, default the labeler's item column),
        the given label, the suggested label and a score (low is suspicious). Each item shows
        "review: current label 3, suggested 8"; Enter accepts the suggestion, k keeps the current
        label, a class key gives another, and each answer is written to the label store.

        >>> issues = mlnb.label_issues(digits, features="features")  # doctest: +SKIP
        >>> labeler = mlnb.label(digits, review=issues.filter(pl.col("is_issue")))  # doctest: +SKIP
        """
        from .._frames import to_polars

        df = to_polars(issues)
        item = item or self.item_col
        for col in (item, label, suggested):
            if col not in df.columns:
                raise MlnbError(f"review(): no column {col!r} in the issues frame; columns: {', '.join(df.columns)}.")
        if score in df.columns:
            df = df.sort(score, nulls_last=True)
        known = set(self.items)
        reviews: dict[str, tuple[str, str, float | None]] = {}
        for it, given, sug, sc in zip(df.get_column(item).cast(str).to_list(), df.get_column(label).to_list(),
                                     df.get_column(suggested).to_list(),
                                     df.get_column(score).to_list() if score in df.columns else [None] * df.height):
            if it in known and it not in reviews and given is not None and sug is not None:
                reviews[it] = (str(given), str(sug), None if sc is None else float(sc))
        if not reviews:
            raise MlnbError(f"review(): none of the issues' {item!r} values is an item of this labeler.")
        with self.lock:
            self.reviews = reviews
            for given, sug, _ in reviews.values():
                self._known_class(given)
                self._known_class(sug)
            self.status = f"reviewing {len(reviews)} suspected label errors, most suspicious first: Enter accepts the suggestion, k keeps the label"
            self.order_by(list(reviews))

    def _after_labels(self, n: int, *, reviewed: bool = False) -> None:
        self._since_train += n
        if reviewed:  # reviewing: on to the next item of the walk, labelled or not
            if max(self.selection) < len(self.order) - 1:
                self.move(1)
            else:
                self._changed()
        elif not self.multi_label:
            self.next_unlabelled()
        if self.features and self._since_train >= self.retrain_every:
            self._since_train = 0
            threading.Thread(target=self.retrain, daemon=True).start()

    def next_unlabelled(self) -> None:
        """Select the next unlabelled item after the selection; a waiting ranking applies if that is on another page."""
        n = len(self.order)
        after = max(self.selection | {self.cursor})
        for step in range(1, n + 1):
            pos = (after + step) % n
            if self.items[self.order[pos]] not in self.state:
                if pos // self.page_size != self.page and self._pending is not None:
                    # Leaving the page: the pages seen so far keep their order, the rest follows the new ranking.
                    self.apply_ranking(keep_page=True)
                    self.next_unlabelled()
                    return
                self.selection, self.anchor, self.cursor = {pos}, pos, pos
                self.page = pos // self.page_size
                break
        self._changed()

    def goto_page(self, page: int) -> None:
        """Show another page (a waiting ranking applies to the pages after the current one)."""
        n_pages = max(1, -(-len(self.order) // self.page_size))
        page = max(0, min(n_pages - 1, int(page)))
        if page != self.page and self._pending is not None:
            self.apply_ranking(keep_page=page > self.page)
        self.page = page
        start = page * self.page_size
        pos = next((p for p in range(start, min(start + self.page_size, len(self.order))) if self.items[self.order[p]] not in self.state), start)
        self.selection, self.anchor, self.cursor = {pos}, pos, pos
        self._changed()

    def apply_ranking(self, *, keep_page: bool = False) -> None:
        """Use the ranking of the last retrain: pages before the current one (and the current one
        with ``keep_page``) keep their order, the rest is re-ranked. Only on request or a page change."""
        if self._pending is None:
            self.status = "no new ranking yet"
            self._changed()
            return
        keep = self.order[: (self.page + (1 if keep_page else 0)) * self.page_size]
        kept = set(keep)
        self.order = keep + [i for i in self._pending if i not in kept]
        self._pending = None
        start = self.page * self.page_size
        if not keep_page:
            pos = next((p for p in range(start, len(self.order)) if self.items[self.order[p]] not in self.state), start)
            self.selection, self.anchor, self.cursor = {pos}, pos, pos
        self.status = "new ranking in use" + (" from the next page" if keep_page else "")
        self._changed()

    def class_keys(self) -> list[str | None]:
        """The key of each class: the digit itself when every class is a digit, else 1-9, 0 by position."""
        if self.classes and all(len(c) == 1 and c.isdigit() for c in self.classes):
            return list(self.classes)
        return [str((i + 1) % 10) if i < 10 else None for i in range(len(self.classes))]

    def _class_for_key(self, key: str) -> str:
        keys = self.class_keys()
        if key in keys:
            return self.classes[keys.index(key)]
        raise MlnbError(f"There is no class {key}: the classes are {', '.join(f'{k}: {c}' for k, c in zip(keys, self.classes) if k) or 'none yet'}.")

    def _class_name(self, cls: str | int) -> str:
        if isinstance(cls, int):
            if not 0 <= cls < len(self.classes):
                raise MlnbError(f"There is no class {cls + 1}: the classes are {', '.join(self.classes) or 'none yet'}.")
            return self.classes[cls]
        if cls not in self.classes:
            raise MlnbError(f"{cls!r} is not one of the classes ({', '.join(self.classes)}); add it with add_class().")
        return cls

    def add_class(self, name: str) -> None:
        name = str(name).strip()
        if not name:
            raise MlnbError("A class needs a name.")
        if name not in self.classes:
            self.classes.append(name)
        self._changed()

    def undo(self) -> None:
        if not self._undo:
            self.status = "nothing to undo"
            self._changed()
            return
        step = self._undo.pop()
        self._write([(it, old) for it, old, _new in reversed(step)], record=False)
        self._redo.append(step)
        self._select_items([it for it, _old, _new in step])
        self.status = f"undone ({len(step)})"
        self._changed()

    def _select_items(self, items: list[str]) -> None:
        """Select these items (by id) and show their page: undo returns to what it undid."""
        at = {self.items[i]: p for p, i in enumerate(self.order)}
        pos = sorted(at[it] for it in items if it in at)
        if pos:
            self.selection, self.anchor, self.cursor = set(pos), pos[0], pos[0]
            self.page = pos[0] // self.page_size

    def redo(self) -> None:
        if not self._redo:
            self.status = "nothing to redo"
            self._changed()
            return
        step = self._redo.pop()
        self._write([(it, new) for it, _old, new in step], record=False)
        self._undo.append(step)
        self._select_items([it for it, _old, _new in step])
        self.status = f"redone ({len(step)})"
        self._changed()

    # -- keys ------------------------------------------------------------------
    def key(self, key: str, *, ctrl: bool = False, shift: bool = False, items: list[str] | None = None, cursor: str | None = None) -> None:
        """A key press as the browser reports it (``event.key``), with the ids the view drew as selected."""
        k = key.lower() if len(key) == 1 else key
        acts = (key.isdigit() and len(key) == 1) or key in ("Enter", " ", "Spacebar") or (k in ("u", "k") and not ctrl)
        if items is not None and acts and not ctrl:
            self.adopt(items, cursor)
        elif cursor is not None and not ctrl and cursor in self.page_ids():
            self.cursor = self._on_page([cursor])[0]  # arrows move from the tile the view shows as current
        if ctrl and k == "z":
            self.redo() if shift else self.undo()
        elif ctrl and k == "y":
            self.redo()
        elif key.isdigit() and len(key) == 1:
            self.label(self._class_for_key(key))
        elif key == "Enter":
            self.accept_suggestion()
        elif key in (" ", "Spacebar"):
            self.mark("skip")
        elif k == "u":
            self.mark("unsure")
        elif k == "k" and not ctrl:
            self.keep_label()
        elif key in ("ArrowRight", "ArrowDown", "ArrowLeft", "ArrowUp"):
            cols = 1 if self.focus else 8
            delta = {"ArrowRight": 1, "ArrowLeft": -1, "ArrowDown": cols, "ArrowUp": -cols}[key]
            self.move(delta, extend=shift)
        elif k == "f":
            self.focus = not self.focus
            self._changed()
        elif k == "r":
            self.apply_ranking()
        elif key == "?":
            self.show_help = not self.show_help
            self._changed()

    # -- what is shown ---------------------------------------------------------------
    def counts(self) -> Any:
        """Labelled items per class, with the unsure/skipped/unlabelled totals."""
        import polars as pl

        per: dict[str, int] = dict.fromkeys(self.classes, 0)
        other = {"(unsure)": 0, "(skipped)": 0}
        for st in self.state.values():
            if st.kind == "label":
                for c in st.label if isinstance(st.label, tuple) else (st.label,):
                    per[c] = per.get(c, 0) + 1
            elif st.kind == "unsure":
                other["(unsure)"] += 1
            elif st.kind == "skip":
                other["(skipped)"] += 1
        done = sum(1 for it in self.items if it in self.state)
        rows = [{"class": c, "count": n} for c, n in per.items()] + [{"class": c, "count": n} for c, n in other.items()]
        rows.append({"class": "(unlabelled)", "count": len(self.items) - done})
        return pl.DataFrame(rows, schema={"class": pl.String, "count": pl.Int64})

    @property
    def labels(self) -> Any:
        """The current labels of this data set as a Polars frame (``labels`` in SQL has every data set)."""
        return self.store.current(self.dataset)

    def page_items(self, page: int | None = None) -> list[dict[str, Any]]:
        """The items of a page, in order: position, item, state, suggestion (no pixels)."""
        page = self.page if page is None else page
        start = page * self.page_size
        out = []
        for pos in range(start, min(start + self.page_size, len(self.order))):
            it = self.items[self.order[pos]]
            st = self.state.get(it, _EMPTY)
            sug = self.suggestions.get(it)
            rev = self.reviews.get(it)
            out.append(
                {
                    "pos": pos,
                    "item": it,
                    "kind": st.kind,
                    "label": list(st.label) if isinstance(st.label, tuple) else st.label,
                    "suggestion": sug[0] if sug else None,
                    "confidence": sug[1] if sug else None,
                    "review": None if rev is None else {"current": self._current(it), "given": rev[0], "suggested": rev[1], "score": rev[2]},
                    "selected": pos in self.selection,
                    "cursor": pos == self.cursor,
                }
            )
        return out

    def thumbnails(self, page: int | None = None) -> dict[str, bytes]:
        """JPEG thumbnails of a page keyed by item id (made once, cached); a missing image gives b''."""
        from ..exceptions import ImageLoadError
        from ..images import thumbnail

        images = self.frame.get_column(self.image)
        out: dict[str, bytes] = {}
        missing = 0
        for row in self.page_items(page):
            try:
                out[row["item"]] = thumbnail(images[self.order[row["pos"]]], self.thumb_size)
            except ImageLoadError:
                out[row["item"]] = b""
                missing += 1
        if missing:
            self.status = f"{missing} image(s) on this page could not be read"
        return out

    def page_message(self) -> dict[str, Any]:
        """Everything the view draws a page from, in one message: ids, thumbnails keyed by id, tags."""
        with self.lock:
            self._token += 1
            items = self.page_items()
            return {
                "token": self._token,
                "page": self.page,
                "n_pages": max(1, -(-len(self.order) // self.page_size)),
                "items": items,
                "thumbs": self.thumbnails(),
                "ranking_waiting": self._pending is not None,
                "clicks": self.clicks_seen,  # the view's last click this page reflects
            }

    # -- what to label next -------------------------------------------------------------
    def order_by(self, items: list[Any]) -> None:
        """Show these items first, in this order (e.g. the result of a ``%%mlsql`` query)."""
        index = {it: i for i, it in enumerate(self.items)}
        first = [index[str(v)] for v in items if str(v) in index]
        seen = set(first)
        self.order = first + [i for i in range(len(self.items)) if i not in seen]
        self._pending = None
        self.cursor, self.anchor, self.selection, self.page = 0, 0, {0}, 0
        self._changed()

    def order_by_query(self, query: str, **params: Any) -> None:
        """Order by the first column of a SQL query (tables: the namespace's frames, ``labels`` ...)."""
        from ..sql import get_session

        ns = {"items": self.frame, **params}
        result = get_session().run(query, ns)
        if result.width == 0:
            raise MlnbError("The query returned no columns.")
        self.order_by(result.get_column(result.columns[0]).to_list())

    # -- active learning --------------------------------------------------------------
    def retrain(self) -> None:
        """Train a head on the labelled items' features, score the rest, re-order by uncertainty."""
        import numpy as np

        from ..heads import train_classifier
        from ..heads._data import feature_matrix

        if not self.features or self.multi_label:
            return
        with self._train_lock:
            import polars as pl

            with self.lock:
                lab = {it: st.label for it, st in self.state.items() if st.kind == "label"}
                done = set(self.state)
            df = self.frame.with_columns(pl.Series("_item", self.items))
            train = df.filter(pl.col("_item").is_in(list(lab))).with_columns(pl.col("_item").replace_strict(lab, return_dtype=pl.String).alias("_label"))
            if train.get_column("_label").n_unique() < 2:
                with self.lock:
                    self.head_info = "the head trains once two classes have labels"
                self._changed()
                return
            counts = train.get_column("_label").value_counts().get_column("count")
            folds = 3 if counts.min() >= 3 else None
            try:
                head = train_classifier(train, features=self.features, label="_label", algo="logistic", folds=folds)
            except MlnbError as exc:
                with self.lock:
                    self.status = f"retraining failed: {exc}"
                self._changed()
                return
            cv = head.meta["metrics"]["accuracy"] if folds else None
            X, ok = feature_matrix(df.get_column(self.features))
            proba = np.full((len(self.items), len(head.classes_)), np.nan)
            proba[ok] = head.estimator.predict_proba(X[ok])
            cls = head.classes_
            suggestions = {it: (str(cls[int(np.argmax(p))]), float(np.max(p))) for it, p, k in zip(self.items, proba, ok) if k}
            unl = [i for i, it in enumerate(self.items) if it not in done and ok[i]]
            scores = {i: uncertainty(proba[i], self.strategy) for i in unl}
            ranked = sorted(unl, key=lambda i: -scores[i])
            rng = random.Random(len(done))
            n_random = int(round(len(ranked) * self.random_share))
            mixed = _mix(ranked, rng.sample(unl, n_random) if n_random else [], self.random_share)
            rest = [i for i in range(len(self.items)) if i not in set(mixed)]
            with self.lock:
                # Never reorder the page on screen: the ranking waits for the next page or ``r``.
                self._pending = mixed + rest
                self.suggestions = suggestions
                self.cv_score = cv
                self.head_info = f"head retrained on {train.height} labels, " + (
                    f"CV accuracy {cv:.2f} ({folds}-fold)"
                    if cv is not None
                    else f"no CV accuracy yet (it needs 3 labels in every class; the fewest has {counts.min()})"
                )
                self.status = self.head_info + " · new ranking from the next page (r: now)"
            self._changed()

    # -- view ------------------------------------------------------------------------------
    def on_change(self, callback: Any) -> None:
        self._listeners.append(callback)

    def _changed(self) -> None:
        with self.lock:
            for cb in list(self._listeners):
                cb()

    def _make_view(self) -> Any:
        from ._labeler_view import LabelerView

        return LabelerView(self)


def uncertainty(p: Any, strategy: str = "entropy") -> float:
    """How unsure a probability row is: ``entropy``, ``margin`` or ``least_confidence``."""
    import numpy as np

    p = np.asarray(p, dtype=float)
    if strategy == "entropy":
        q = p[p > 0]
        return float(-(q * np.log(q)).sum())
    s = np.sort(p)[::-1]
    if strategy == "margin":
        return float(1.0 - (s[0] - (s[1] if len(s) > 1 else 0.0)))
    if strategy == "least_confidence":
        return float(1.0 - s[0])
    raise MlnbError(f"Unknown strategy {strategy!r}: entropy, margin or least_confidence.")


def _mix(ranked: list[int], randoms: list[int], share: float) -> list[int]:
    """Interleave the most uncertain items with a random share."""
    if not randoms:
        return ranked
    out: list[int] = []
    seen: set[int] = set()
    every = max(1, int(round(1 / share)))
    r = iter(randoms)
    for i, idx in enumerate(ranked):
        if i % every == every - 1:
            for extra in r:
                if extra not in seen:
                    out.append(extra)
                    seen.add(extra)
                    break
        if idx not in seen:
            out.append(idx)
            seen.add(idx)
    return out


def _dataset_id(col: str, items: list[str]) -> str:
    h = hashlib.sha1("\n".join(sorted(items)).encode()).hexdigest()[:10]
    return f"{col}-{h}"


def label(frame: Any, *, image: str = "path", classes: list[str] | tuple[str, ...] = (), **kwargs: Any) -> Labeler:
    """Open a labeler on ``frame``'s images: ``mlnb.label(df, image="path", classes=["cat", "dog"])``.

    Labels are saved the moment they are given; reopening on the same data resumes.
    ``features=`` (an embedding column) turns on active learning.
    """
    return Labeler(frame, image=image, classes=classes, **kwargs)
