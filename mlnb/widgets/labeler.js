// The labeler's view: draws each page from one message (`page_data`: ids, thumbnails keyed by id,
// tags) and sends back what the user does, naming the item ids it acted on.
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "mlnb-labeler";
  root.tabIndex = 0;
  // JupyterLab: keys typed in the widget must not trigger notebook shortcuts.
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  el.appendChild(root);
  let urls = [];
  let dragStart = null;
  // The selection as drawn: ids of the page on screen. Clicks change it at once, so a key pressed
  // right after a click acts on the tile the person sees selected, whatever the kernel has replied.
  let sel = [];
  let cursor = null;
  let anchor = null;
  let order = [];
  // Clicks are numbered; the kernel echoes the last one it has seen, so a reply that left before
  // the person's latest click cannot take that click's selection away.
  let clicks = 0;

  function send(msg) { model.send(msg); }
  function selected() { return order.filter((id) => sel.includes(id)); }

  function markSelection() {
    root.querySelectorAll(".cell").forEach((c) => c.classList.toggle("selected", sel.includes(c._id)));
  }

  function draw() {
    urls.forEach((u) => URL.revokeObjectURL(u));
    urls = [];
    root.innerHTML = "";
    const page = model.get("page_data") || {};
    const items = page.items || [];
    const thumbs = page.thumbs || {};
    order = items.map((it) => it.item);
    if ((page.clicks ?? 0) >= clicks || !sel.some((id) => order.includes(id))) {
      sel = items.filter((it) => it.selected).map((it) => it.item);
      const cur = items.find((it) => it.cursor);
      cursor = cur ? cur.item : sel[sel.length - 1] ?? null;
      anchor = cursor;
    } else {
      sel = sel.filter((id) => order.includes(id));
    }

    const bar = document.createElement("div");
    bar.className = "bar classes";
    model.get("classes").forEach((c) => {
      const b = document.createElement("button");
      b.className = "cls";
      if (c.key !== null && c.key !== undefined) {
        const k = document.createElement("kbd");
        k.textContent = c.key;
        b.append(k, " ");
      }
      b.append(c.name);
      b.title = c.key !== null && c.key !== undefined ? `key ${c.key}` : "";
      b.dataset.cls = c.name;
      b.onclick = () => send({ type: "label", cls: c.name, items: selected() });
      bar.appendChild(b);
    });
    const unsure = document.createElement("button");
    unsure.innerHTML = "<kbd>u</kbd> unsure";
    unsure.onclick = () => send({ type: "mark", kind: "unsure", items: selected() });
    const skip = document.createElement("button");
    skip.innerHTML = "<kbd>space</kbd> skip";
    skip.onclick = () => send({ type: "mark", kind: "skip", items: selected() });
    const input = document.createElement("input");
    input.placeholder = "new class";
    input.size = 10;
    input.onkeydown = (e) => {
      e.stopPropagation();
      if (e.key === "Enter" && input.value.trim()) send({ type: "add_class", name: input.value.trim() });
    };
    const smaller = document.createElement("button");
    smaller.textContent = "−";
    smaller.title = "smaller thumbnails";
    smaller.onclick = () => send({ type: "zoom", factor: 0.8 });
    const larger = document.createElement("button");
    larger.textContent = "+";
    larger.title = "larger thumbnails";
    larger.onclick = () => send({ type: "zoom", factor: 1.25 });
    const per = document.createElement("select");
    [8, 24, 48, 96, 192].forEach((n) => per.appendChild(new Option(`${n} / page`, n, false, n === model.get("page_size"))));
    if (![8, 24, 48, 96, 192].includes(model.get("page_size"))) per.appendChild(new Option(`${model.get("page_size")} / page`, model.get("page_size"), true, true));
    per.onchange = () => send({ type: "page_size", size: Number(per.value) });
    bar.append(unsure, skip, input, smaller, larger, per);
    root.appendChild(bar);

    const counts = document.createElement("div");
    counts.className = "bar counts";
    counts.textContent = model.get("counts").map((r) => `${r.class}: ${r.count}`).join(" · ");
    root.appendChild(counts);
    if (model.get("head_info")) {
      const head = document.createElement("div");
      head.className = "bar head";
      head.textContent = model.get("head_info");
      root.appendChild(head);
    }

    const grid = document.createElement("div");
    grid.className = "grid";
    const size = model.get("thumb_size") * (model.get("focus") ? 4 : 1);
    items.filter((it) => !model.get("focus") || sel.includes(it.item)).forEach((it) => {
      const cell = document.createElement("div");
      cell._id = it.item;
      cell.className = "cell" + (sel.includes(it.item) ? " selected" : "") + (it.kind ? " done" : "");
      cell.dataset.pos = it.pos;
      const img = document.createElement("img");
      img.width = size; img.height = size; img.alt = "";
      // No paths in tooltips: in ImageFolder data the path names the class.
      const what = it.kind === "label" ? `labelled ${Array.isArray(it.label) ? it.label.join(", ") : it.label}` : (it.kind || "unlabelled");
      cell.title = `#${it.pos + 1} · ${what}` + (it.review ? ` · review: current label ${it.review.current}, suggested ${it.review.suggested} (Enter accepts, k keeps)` : "");
      const buf = thumbs[it.item];
      if (buf && buf.byteLength) {
        const u = URL.createObjectURL(new Blob([buf], { type: "image/jpeg" }));
        urls.push(u);
        img.src = u;
      }
      cell.appendChild(img);
      const tag = document.createElement("div");
      if (it.kind === "label") { tag.className = "tag label"; tag.textContent = Array.isArray(it.label) ? it.label.join(", ") : it.label; }
      else if (it.kind) { tag.className = "tag"; tag.textContent = it.kind; }
      else if (it.review) { tag.className = "tag review"; tag.textContent = `review: current label ${it.review.current}, suggested ${it.review.suggested}`; }
      else if (it.suggestion) { tag.className = "tag suggested"; tag.textContent = `${it.suggestion}? ${(it.confidence * 100).toFixed(0)}%`; }
      if (tag.className) cell.appendChild(tag);
      cell.onmousedown = (e) => { dragStart = it.item; e.preventDefault(); root.focus(); };
      cell.onmouseup = (e) => {
        if (dragStart !== null && dragStart !== it.item) {
          const [a, b] = [order.indexOf(dragStart), order.indexOf(it.item)].sort((x, y) => x - y);
          sel = order.slice(a, b + 1);
          send({ type: "drag", items: [dragStart, it.item], clicks: ++clicks });
        } else {
          const shift = e.shiftKey, ctrl = e.ctrlKey || e.metaKey;
          if (shift && anchor !== null) {
            const [a, b] = [order.indexOf(anchor), order.indexOf(it.item)].sort((x, y) => x - y);
            sel = order.slice(a, b + 1);
          } else if (ctrl) {
            sel = sel.includes(it.item) ? sel.filter((x) => x !== it.item) : [...sel, it.item];
            anchor = it.item;
          } else {
            sel = [it.item];
            anchor = it.item;
          }
          send({ type: "click", item: it.item, pos: it.pos, shift, ctrl, clicks: ++clicks });
        }
        cursor = it.item;
        dragStart = null;
        markSelection();
      };
      grid.appendChild(cell);
    });
    root.appendChild(grid);

    const nav = document.createElement("div");
    nav.className = "bar nav";
    const prev = document.createElement("button");
    prev.textContent = "‹ page";
    prev.onclick = () => send({ type: "page", page: (page.page || 0) - 1 });
    const next = document.createElement("button");
    next.textContent = "page ›";
    next.onclick = () => send({ type: "page", page: (page.page || 0) + 1 });
    const where = document.createElement("span");
    where.textContent = `page ${(page.page || 0) + 1} / ${page.n_pages || 1}`;
    nav.append(prev, where, next);
    if (page.ranking_waiting) {
      const rank = document.createElement("button");
      rank.className = "rank";
      rank.innerHTML = "<kbd>r</kbd> use the new ranking now";
      rank.onclick = () => send({ type: "rank" });
      nav.append(rank);
    }
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = model.get("status");
    nav.append(status);
    root.appendChild(nav);
    if (model.get("error")) {
      const err = document.createElement("div");
      err.className = "error";
      err.textContent = model.get("error");
      root.appendChild(err);
    }
    if (model.get("show_help")) {
      const help = document.createElement("div");
      help.className = "help";
      help.textContent = model.get("help_text");
      root.appendChild(help);
    }
  }

  root.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT") return;
    const keys = ["Enter", " ", "ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "?", "u", "f", "r", "z", "y", "k"];
    if (/^[0-9]$/.test(e.key) || keys.includes(e.key) || keys.includes(e.key.toLowerCase())) {
      e.preventDefault();
      e.stopPropagation();
      send({ type: "key", key: e.key, ctrl: e.ctrlKey || e.metaKey, shift: e.shiftKey, items: selected(), cursor });
    }
  });
  // A message from the kernel changes several traits at once: draw once, after all of them.
  let queued = false;
  function redraw() {
    if (queued) return;
    queued = true;
    queueMicrotask(() => { queued = false; draw(); });
  }
  ["page_data", "classes", "counts", "status", "head_info", "error", "show_help", "focus", "thumb_size", "page_size"].forEach((n) =>
    model.on(`change:${n}`, redraw));
  draw();
  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}
export default { render };
