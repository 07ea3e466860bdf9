"""Regenerates the README's tour from a fresh execution of examples/01_quickstart.ipynb, so the
README shows what a user sees: the same cells, the same tables as mlnb draws them in the notebook.

    python examples/_readme_output.py            # execute the notebook in a temporary folder, rewrite README.md
    python examples/_readme_output.py --check    # exit 1 when README.md's tour differs from a fresh run
    python examples/_readme_output.py --executed NB.ipynb   # from a notebook executed already (--save keeps one)

The tables come from the cells' HTML output (mlnb's own result tables), thumbnails shown as 🖼.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "01_quickstart.ipynb"
START = "## A short tour (real output of `examples/01_quickstart.ipynb`)"
END = "\n## Reference"
MAX_ROWS = 6  # rows shown per table in the README (the notebook shows mlnb.config.display_limit)


class _Tables(HTMLParser):
    """Rows of the first ``table.dataframe`` of mlnb's HTML output, and its notes."""

    def __init__(self) -> None:
        super().__init__()
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self.shape = ""
        self._cell: list[str] | None = None
        self._in_small = 0
        self._row: list[str] | None = None
        self._in_head = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self._done:
            return
        if tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "small":
            self._in_small += 1
        elif tag == "img" and self._cell is not None:
            self._cell.append("🖼")
        elif tag == "br" and self._cell is not None and not self._in_head:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if self._done:
            return
        if tag == "small":
            self._in_small -= 1
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            (self.header if self._in_head else self.rows).append(self._row)
            self._row = None
        elif tag == "thead":
            self._in_head = False
        elif tag == "table":
            self._done = True

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not (self._in_head and self._in_small):
            self._cell.append(data)
        elif not self.header and data.startswith("shape:"):
            self.shape = data


def _table(markup: str) -> str:
    t = _Tables()
    t.feed(markup)
    if not t.header:
        return ""
    head = t.header[0]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in t.rows[:MAX_ROWS]]
    n = int(re.sub(r"[^0-9]", "", t.shape.split(",")[0]) or 0) if t.shape else len(t.rows)
    if n > min(len(t.rows), MAX_ROWS):
        lines.append(f"\n<sub>{min(len(t.rows), MAX_ROWS)} of {n:,} rows</sub>")
    return "\n".join(lines)


def execute(work: Path) -> object:
    import nbformat
    from nbclient import NotebookClient

    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    nb = nbformat.read(work / NOTEBOOK.name, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    return nb


def tour(nb: object) -> str:
    """The README section: each code cell (but the imports) with what it showed."""
    parts = [START, ""]
    for cell in nb.cells:  # type: ignore[attr-defined]
        if cell.cell_type == "markdown":
            first = cell.source.splitlines()[0] if cell.source else ""
            if first.startswith("## "):
                parts += [f"**{first[3:].strip()}**", ""]
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        lang = "sql" if cell.source.startswith("%%mlsql") else "python"
        parts += [f"```{lang}", cell.source.rstrip(), "```"]
        shown = ""
        for out in cell.outputs:
            if out.output_type == "error":
                raise SystemExit(f"the quickstart failed in a cell: {out.ename}: {out.evalue}")
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                continue  # a progress bar: seen while the cell runs, gone from what it shows
            if "text/html" in data and "<table" in data["text/html"]:
                shown = _table(data["text/html"])
            elif "text/plain" in data and not shown:
                shown = "```\n" + html.unescape(data["text/plain"]).rstrip() + "\n```"
        if shown:
            parts += [shown]
        parts.append("")
    text = "\n".join(parts).rstrip() + "\n"
    # The run's temporary folder stands for the user's own folder.
    return re.sub(re.escape(tempfile.gettempdir()) + r"/tmp\w+/", "./", text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when the README is out of date")
    ap.add_argument("--save", type=Path, help="also keep the executed notebook here")
    ap.add_argument("--executed", type=Path, help="render this executed notebook instead of running one")
    args = ap.parse_args()
    if args.executed:
        import nbformat

        nb = nbformat.read(args.executed, as_version=4)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            nb = execute(Path(tmp))
    if args.save:
        import nbformat

        nbformat.write(nb, args.save)
    section = tour(nb)
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(START), readme.index(END)
    new = readme[:start] + section + readme[end:]
    if args.check:
        if new != readme:
            print("README.md's tour differs from a fresh run of the quickstart: python examples/_readme_output.py")
            return 1
        return 0
    (ROOT / "README.md").write_text(new)
    print(f"README.md: tour rewritten from {NOTEBOOK.name} ({section.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
