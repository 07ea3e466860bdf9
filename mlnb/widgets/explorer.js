// Canvas scatter for the embedding explorer: draws buffers, reports hovers and lassos.
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "mlnb-explorer";
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  const W = 640, H = 480, PAD = 10;
  const canvas = document.createElement("canvas");
  canvas.width = W; canvas.height = H;
  const side = document.createElement("div");
  side.className = "side";
  root.append(canvas, side);
  el.appendChild(root);
  const ctx = canvas.getContext("2d");
  let px = new Float32Array(0), py = new Float32Array(0), grid = new Map(), selected = new Set();
  let lasso = null, box = null, hoverTimer = null, lastHover = -1, angle = 0.6, rotating = null;
  // Drag mode from a control, not modifier keys: the notebook itself takes Shift/Ctrl-clicks.
  let mode = "lasso";

  function project() {
    const dims = model.get("dims");
    const raw = new Float32Array(model.get("xy").buffer.slice(0));
    const n = raw.length / dims;
    // 3-D layouts are shown rotated about the vertical axis (Alt+drag turns them).
    const xy = new Float32Array(2 * n);
    const c = Math.cos(angle), s = Math.sin(angle);
    for (let i = 0; i < n; i++) {
      const x = raw[dims * i], y = raw[dims * i + 1], z = dims === 3 ? raw[dims * i + 2] : 0;
      xy[2 * i] = dims === 3 ? c * x + s * z : x;
      xy[2 * i + 1] = y;
    }
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) { const x = xy[2 * i], y = xy[2 * i + 1]; if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y; }
    px = new Float32Array(n); py = new Float32Array(n); grid = new Map();
    for (let i = 0; i < n; i++) {
      px[i] = PAD + (xy[2 * i] - x0) / ((x1 - x0) || 1) * (W - 2 * PAD);
      py[i] = H - PAD - (xy[2 * i + 1] - y0) / ((y1 - y0) || 1) * (H - 2 * PAD);
      const key = ((px[i] / 8) | 0) * 1000 + ((py[i] / 8) | 0);
      if (!grid.has(key)) grid.set(key, []);
      grid.get(key).push(i);
    }
  }

  function colorOf(i, codes, cats, lo, hi) {
    const v = codes[i];
    if (cats.length) return v < 0 ? "#bbb" : PALETTE[v % PALETTE.length];
    if (Number.isNaN(v)) return "#bbb";
    const t = (v - lo) / ((hi - lo) || 1);
    return `hsl(${(1 - t) * 240}, 70%, 45%)`;
  }

  function draw() {
    ctx.clearRect(0, 0, W, H);
    const codes = new Float32Array(model.get("codes").buffer.slice(0));
    const cats = model.get("categories");
    let lo = Infinity, hi = -Infinity;
    if (!cats.length) for (const v of codes) { if (!Number.isNaN(v)) { if (v < lo) lo = v; if (v > hi) hi = v; } }
    const r = px.length > 20000 ? 1 : 2.5;
    for (let i = 0; i < px.length; i++) {
      ctx.fillStyle = colorOf(i, codes, cats, lo, hi);
      ctx.fillRect(px[i] - r / 2, py[i] - r / 2, r, r);
    }
    if (selected.size) {
      ctx.strokeStyle = "#000";
      for (const i of selected) ctx.strokeRect(px[i] - 2.5, py[i] - 2.5, 5, 5);
    }
    if (box) {
      ctx.strokeStyle = "#333";
      ctx.strokeRect(Math.min(box[0], box[2]), Math.min(box[1], box[3]), Math.abs(box[2] - box[0]), Math.abs(box[3] - box[1]));
    }
    if (lasso && lasso.length > 1) {
      ctx.strokeStyle = "#333"; ctx.beginPath(); ctx.moveTo(lasso[0][0], lasso[0][1]);
      for (const [x, y] of lasso) ctx.lineTo(x, y);
      ctx.stroke();
    }
    drawSide();
  }

  function drawSide() {
    side.innerHTML = "";
    const modes = document.createElement("select");
    modes.className = "mode";
    const choices = model.get("dims") === 3 ? ["lasso", "box", "rotate"] : ["lasso", "box"];
    choices.forEach((m) => modes.appendChild(new Option(`drag: ${m}`, m, false, m === mode)));
    modes.onchange = () => { mode = modes.value; };
    side.appendChild(modes);
    const sel = document.createElement("select");
    sel.appendChild(new Option("(no colour)", ""));
    for (const c of model.get("color_columns")) sel.appendChild(new Option(c, c, false, c === model.get("color")));
    sel.onchange = () => model.send({ type: "color", column: sel.value });
    const legend = document.createElement("div");
    model.get("categories").slice(0, 20).forEach((c, i) => {
      const sw = document.createElement("span");
      sw.style.color = PALETTE[i % PALETTE.length];
      sw.textContent = "■ ";
      legend.append(sw, document.createTextNode(`${c}  `));
    });
    const hover = document.createElement("div");
    hover.className = "hover";
    const info = model.get("hover_info");
    const thumb = model.get("hover_thumb");
    if (thumb && thumb.byteLength) {
      const img = document.createElement("img");
      img.src = URL.createObjectURL(new Blob([thumb], { type: "image/jpeg" }));
      hover.appendChild(img);
    }
    if (info && info.fields) {
      const f = document.createElement("div");
      f.className = "fields";
      f.textContent = Object.entries(info.fields).map(([k, v]) => `${k}: ${v}`).join("\n");
      hover.appendChild(f);
    }
    const labelBox = document.createElement("div");
    const input = document.createElement("input");
    input.placeholder = "label selection as…";
    input.onkeydown = (e) => { e.stopPropagation(); if (e.key === "Enter" && input.value.trim()) model.send({ type: "label", label: input.value.trim() }); };
    labelBox.append(input);
    const status = document.createElement("div");
    status.className = "status";
    status.textContent = model.get("status");
    const err = document.createElement("div");
    err.className = "error";
    err.textContent = model.get("error");
    const g = document.createElement("div");
    g.className = "grid";
    for (const b of model.get("grid")) {
      const img = document.createElement("img");
      if (b && b.byteLength) img.src = URL.createObjectURL(new Blob([b], { type: "image/jpeg" }));
      g.appendChild(img);
    }
    side.append(sel, legend, hover, labelBox, status, err, g);
  }

  function nearest(x, y) {
    let best = -1, bd = 36;
    const gx = (x / 8) | 0, gy = (y / 8) | 0;
    for (let dx = -1; dx <= 1; dx++) for (let dy = -1; dy <= 1; dy++) {
      for (const i of grid.get((gx + dx) * 1000 + gy + dy) || []) {
        const d = (px[i] - x) ** 2 + (py[i] - y) ** 2;
        if (d < bd) { bd = d; best = i; }
      }
    }
    return best;
  }

  function pos(e) { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
  canvas.onmousedown = (e) => {
    e.preventDefault();
    e.stopPropagation();
    const p = pos(e);
    if (mode === "rotate") rotating = p[0];
    else if (mode === "box") box = [p[0], p[1], p[0], p[1]];
    else lasso = [p];
  };
  canvas.onmousemove = (e) => {
    const [x, y] = pos(e);
    if (rotating !== null) { angle += (x - rotating) / 120; rotating = x; project(); draw(); return; }
    if (box) { box[2] = x; box[3] = y; draw(); return; }
    if (lasso) { lasso.push([x, y]); draw(); return; }
    const i = nearest(x, y);
    if (i >= 0 && i !== lastHover) {
      lastHover = i;
      clearTimeout(hoverTimer);
      hoverTimer = setTimeout(() => model.send({ type: "hover", index: i }), 30);
    }
  };
  canvas.onmouseup = () => {
    if (rotating !== null) { rotating = null; return; }
    if (box) {
      const [x0, y0, x1, y1] = box; box = null;
      const inside = [];
      for (let i = 0; i < px.length; i++) {
        if (px[i] >= Math.min(x0, x1) && px[i] <= Math.max(x0, x1) && py[i] >= Math.min(y0, y1) && py[i] <= Math.max(y0, y1)) inside.push(i);
      }
      selected = new Set(inside);
      model.send({ type: "select", indices: inside });
      draw();
      return;
    }
    if (!lasso) return;
    const poly = lasso; lasso = null;
    if (poly.length < 3) { draw(); return; }
    const inside = [];
    for (let i = 0; i < px.length; i++) {
      let c = false;
      for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
        const [xa, ya] = poly[a], [xb, yb] = poly[b];
        if ((ya > py[i]) !== (yb > py[i]) && px[i] < (xb - xa) * (py[i] - ya) / (yb - ya) + xa) c = !c;
      }
      if (c) inside.push(i);
    }
    selected = new Set(inside);
    model.send({ type: "select", indices: inside });
    draw();
  };
  model.on("change:xy", () => { project(); draw(); });
  // Recolouring redraws the points; hovers and selections only touch the side panel.
  ["codes", "categories", "color"].forEach((n) => model.on(`change:${n}`, draw));
  ["hover_info", "hover_thumb", "grid", "status", "error"].forEach((n) => model.on(`change:${n}`, drawSide));
  project();
  draw();
}
export default { render };
