// The labeler's view: draws what the kernel sends, sends back what the user does.
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "mlnb-labeler";
  root.tabIndex = 0;
  // JupyterLab: keys typed in the widget must not trigger notebook shortcuts.
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  el.appendChild(root);
  let urls = [];
  let dragStart = null;

  function send(msg) { model.send(msg); }

  function draw() {
    urls.forEach((u) => URL.revokeObjectURL(u));
    urls = [];
    root.innerHTML = "";
    const classes = model.get("classes");
    const bar = document.createElement("div");
    bar.className = "bar classes";
    classes.forEach((c, i) => {
      const b = document.createElement("button");
      b.textContent = `${i < 10 ? (i + 1) % 10 + ": " : ""}${c}`;
      b.dataset.cls = c;
      b.onclick = () => send({ type: "label", cls: c });
      bar.appendChild(b);
    });
    const unsure = document.createElement("button");
    unsure.textContent = "unsure";
    unsure.onclick = () => send({ type: "mark", kind: "unsure" });
    const skip = document.createElement("button");
    skip.textContent = "skip";
    skip.onclick = () => send({ type: "mark", kind: "skip" });
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
    [24, 48, 96, 192].forEach((n) => per.appendChild(new Option(`${n} / page`, n, false, n === model.get("page_size"))));
    per.onchange = () => send({ type: "page_size", size: Number(per.value) });
    bar.append(unsure, skip, input, smaller, larger, per);
    root.appendChild(bar);

    const counts = document.createElement("div");
    counts.className = "bar counts";
    counts.textContent = model.get("counts").map((r) => `${r.class}: ${r.count}`).join(" · ");
    const cv = model.get("cv_score");
    if (cv !== null && cv !== undefined) counts.textContent += ` · head CV accuracy ${cv.toFixed(3)}`;
    root.appendChild(counts);

    const grid = document.createElement("div");
    grid.className = "grid";
    const thumbs = model.get("thumbs");
    const size = model.get("thumb_size") * (model.get("focus") ? 4 : 1);
    const items = model.get("items").filter((it) => !model.get("focus") || it.selected);
    items.forEach((it) => {
      const cell = document.createElement("div");
      cell.className = "cell" + (it.selected ? " selected" : "");
      cell.dataset.pos = it.pos;
      const buf = thumbs[it.pos - model.get("page") * model.get("items").length] || thumbs[model.get("items").indexOf(it)];
      const img = document.createElement("img");
      img.width = size; img.height = size; img.alt = it.item; img.title = it.item;
      if (buf && buf.byteLength) {
        const u = URL.createObjectURL(new Blob([buf], { type: "image/jpeg" }));
        urls.push(u);
        img.src = u;
      }
      cell.appendChild(img);
      const tag = document.createElement("div");
      if (it.kind === "label") { tag.className = "tag"; tag.textContent = Array.isArray(it.label) ? it.label.join(", ") : it.label; }
      else if (it.kind) { tag.className = "tag"; tag.textContent = it.kind; }
      else if (it.suggestion) { tag.className = "tag suggested"; tag.textContent = `${it.suggestion}? ${(it.confidence * 100).toFixed(0)}%`; }
      if (tag.className) cell.appendChild(tag);
      cell.onmousedown = (e) => { dragStart = it.pos; e.preventDefault(); root.focus(); };
      cell.onmouseup = (e) => {
        if (dragStart !== null && dragStart !== it.pos) send({ type: "drag", start: dragStart, end: it.pos });
        else send({ type: "click", pos: it.pos, shift: e.shiftKey, ctrl: e.ctrlKey || e.metaKey });
        dragStart = null;
      };
      grid.appendChild(cell);
    });
    root.appendChild(grid);

    const nav = document.createElement("div");
    nav.className = "bar nav";
    const prev = document.createElement("button");
    prev.textContent = "‹ page";
    prev.onclick = () => send({ type: "page", page: model.get("page") - 1 });
    const next = document.createElement("button");
    next.textContent = "page ›";
    next.onclick = () => send({ type: "page", page: model.get("page") + 1 });
    const where = document.createElement("span");
    where.textContent = `page ${model.get("page") + 1} / ${model.get("n_pages")}`;
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = model.get("status");
    nav.append(prev, where, next, status);
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
    const keys = ["Enter", " ", "ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "?", "u", "f", "z", "y"];
    if (/^[0-9]$/.test(e.key) || keys.includes(e.key) || keys.includes(e.key.toLowerCase())) {
      e.preventDefault();
      e.stopPropagation();
      send({ type: "key", key: e.key, ctrl: e.ctrlKey || e.metaKey, shift: e.shiftKey });
    }
  });
  ["items", "thumbs", "classes", "counts", "status", "error", "show_help", "focus", "page", "cv_score"].forEach((n) =>
    model.on(`change:${n}`, draw));
  draw();
  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}
export default { render };
