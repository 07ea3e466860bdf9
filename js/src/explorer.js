// The embedding explorer's view: a WebGL scatter (regl-scatterplot) with pan/zoom,
// lasso and box selection, hover tooltips at the cursor with thumbnails fetched from
// the kernel on demand, a legend that filters, and a virtualised grid of the selection.
//
// Built into mlnb/widgets/explorer.js by `bash dev js` (esbuild); users need no Node.
// All state that matters lives in the Python controller: this view sends the events
// a person makes (hover, select, label, colour, layout) and draws what it is sent.
import createScatterplot, { createRenderer } from "regl-scatterplot";

const TAB20 = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
];
const NULL_COLOR = "#c8c8c8";
const VIRIDIS = ["#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c", "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725"];
const TILE = 76; // grid tile pitch in px (72 px image + gap)
const THUMB_CACHE = 2000;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function hexToRgb(h) {
  const v = parseInt(h.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function categoryColors(k) {
  // 20 distinct colours, then golden-angle hues for the rest (up to ~50 categories are offered).
  const out = [];
  for (let i = 0; i < k; i++) {
    if (i < TAB20.length) out.push(TAB20[i]);
    else out.push(`hsl(${Math.round((i * 137.508) % 360)}, 65%, ${i % 2 ? 40 : 60}%)`);
  }
  return out;
}

function hslToHex(s) {
  const m = /hsl\((\d+), (\d+)%, (\d+)%\)/.exec(s);
  if (!m) return s;
  const h = +m[1] / 360, sat = +m[2] / 100, l = +m[3] / 100;
  const f = (n) => {
    const k = (n + h * 12) % 12;
    const a = sat * Math.min(l, 1 - l);
    const c = l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(c * 255).toString(16).padStart(2, "0");
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

function rampColors(n) {
  // n colours along viridis, for the continuous scale.
  const out = [];
  for (let i = 0; i < n; i++) {
    const t = (i / (n - 1)) * (VIRIDIS.length - 1);
    const a = Math.floor(t), b = Math.min(a + 1, VIRIDIS.length - 1), f = t - a;
    const ca = hexToRgb(VIRIDIS[a]), cb = hexToRgb(VIRIDIS[b]);
    out.push("#" + ca.map((c, j) => Math.round(c + (cb[j] - c) * f).toString(16).padStart(2, "0")).join(""));
  }
  return out;
}

function f32(view) {
  // Synced bytes arrive as a DataView over a larger buffer: copy out exactly its bytes.
  if (!view || !view.byteLength) return new Float32Array(0);
  return new Float32Array(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
}

function i32(view) {
  if (!view || !view.byteLength) return new Int32Array(0);
  if (view instanceof ArrayBuffer) return new Int32Array(view.slice(0));
  return new Int32Array(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
}

function fmt(v) {
  if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString() : v.toPrecision(4);
  if (v === null || v === undefined) return "—";
  return String(v);
}

function render({ model, el: host }) {
  const root = el("div", "mlnb-explorer");
  // Keys typed here (Esc, digits in the label box) must not drive the notebook.
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  root.tabIndex = -1;
  host.appendChild(root);

  // -- a whole-frame problem: a message in the widget's own area, no half-drawn view ----
  const problem = el("div", "mlnb-problem");
  root.appendChild(problem);
  const body = el("div", "mlnb-body");
  root.appendChild(body);

  // -- toolbar ------------------------------------------------------------------------
  const bar = el("div", "mlnb-bar");
  const colorSel = el("select", "mlnb-color");
  colorSel.title = "Colour by";
  const modes = el("div", "mlnb-modes");
  const modeButtons = {};
  for (const [key, label, title] of [
    ["pan", "Pan", "Drag to pan, wheel to zoom, double-click to reset the view"],
    ["lasso", "Lasso", "Drag a free shape to select (Shift+drag works in any mode)"],
    ["box", "Box", "Drag a rectangle to select"],
  ]) {
    const b = el("button", "mlnb-mode", label);
    b.title = title;
    b.dataset.mode = key;
    modeButtons[key] = b;
    modes.appendChild(b);
  }
  const layoutSel = el("select", "mlnb-layout");
  layoutSel.title = "Layout";
  const progress = el("span", "mlnb-progress");
  const resetBtn = el("button", "mlnb-reset", "Reset view");
  bar.append(el("span", "mlnb-lbl", "Colour"), colorSel, modes, el("span", "mlnb-lbl", "Layout"), layoutSel, resetBtn, progress);
  body.appendChild(bar);

  // -- plot and side panel --------------------------------------------------------------
  const main = el("div", "mlnb-main");
  const plot = el("div", "mlnb-plot");
  const canvas = el("canvas", "mlnb-canvas");
  const tooltip = el("div", "mlnb-tooltip");
  const tipImg = el("img");
  const tipFields = el("div", "mlnb-tip-fields");
  tooltip.append(tipImg, tipFields);
  const message = el("div", "mlnb-message");
  const ghost = el("canvas", "mlnb-ghost"); // the last frame, moved while a gesture runs
  plot.append(canvas, ghost, tooltip, message);
  const side = el("div", "mlnb-side");
  const legend = el("div", "mlnb-legend");
  const selBox = el("div", "mlnb-selection");
  const selCount = el("div", "mlnb-selcount", "Nothing selected: drag a lasso or a box.");
  const actions = el("div", "mlnb-actions");
  const labelInput = el("input", "mlnb-label-input");
  labelInput.placeholder = "label";
  const labelBtn = el("button", "mlnb-label-btn", "Label selection");
  const saveInput = el("input", "mlnb-save-input");
  saveInput.placeholder = "table name";
  const saveBtn = el("button", "mlnb-save-btn", "Save as table");
  const clearBtn = el("button", "mlnb-clear-btn", "Clear");
  actions.append(labelInput, labelBtn, saveInput, saveBtn, clearBtn);
  const grid = el("div", "mlnb-grid");
  const gridInner = el("div", "mlnb-grid-inner");
  grid.appendChild(gridInner);
  selBox.append(selCount, actions, grid);
  side.append(legend, selBox);
  main.append(plot, side);
  body.appendChild(main);
  const status = el("div", "mlnb-status");
  const error = el("div", "mlnb-error");
  body.append(status, error);

  // The plot's size is fixed in pixels (never stretched by CSS), so the data keeps its
  // aspect ratio and screen-to-point mapping stays right whatever the side panel does.
  // size [0, 0]: fit the output area once, beside a side panel, at 4:3; then it stays put
  // (the area is measured when the widget is first laid out: it may not be at render time).
  let [W, H] = model.get("size");
  const fit = !W || !H;
  const fitted = (width) => {
    const w = Math.round(Math.min(640, Math.max(360, width - 290)));
    return [w, Math.round((w * 3) / 4)];
  };
  if (fit) [W, H] = fitted(host.getBoundingClientRect().width || 930);
  root.dataset.size = `${W}x${H}`;
  plot.style.width = `${W}px`;
  plot.style.height = `${H}px`;

  const n0 = model.get("n");
  const pointSize = n0 > 500000 ? 1.5 : n0 > 100000 ? 2 : n0 > 20000 ? 3 : n0 > 2000 ? 4 : 6;
  // The library's default renderer draws into a window-sized framebuffer; one the size of
  // the plot halves the cost of a redraw.
  const glCanvas = document.createElement("canvas");
  glCanvas.width = W * window.devicePixelRatio;
  glCanvas.height = H * window.devicePixelRatio;
  const renderer = createRenderer({ canvas: glCanvas });
  const scatterplot = createScatterplot({
    renderer,
    // Events as they happen, not after the next (at a million points, slow) redraw: a
    // selection reaches the kernel and a hover asks for its thumbnail at once.
    syncEvents: true,
    canvas,
    width: W,
    height: H,
    backgroundColor: "#ffffff",
    pointSize,
    pointSizeSelected: Math.max(1, pointSize / 2),
    pointOutlineWidth: n0 > 100000 ? 1 : 2,
    opacityInactiveScale: 0.25,
    pointColorHover: "#000000",
    // Lasso and box are drawn here (exact vertices, from the press to the release); the
    // library only pans, zooms, hovers and shows the selection. No rotation: the screen
    // mapping stays a scale and a shift.
    actionKeyMap: { merge: "meta" },
    deselectOnDblClick: false,
    // The library listens for Esc on the whole window: Esc in a notebook cell (Jupyter's key for
    // command mode) cleared every explorer's selection. Esc clears only inside the widget (below).
    deselectOnEscape: false,
    aspectRatio: 1,
    performanceMode: n0 > 2000000,
    // Patched in by js/patches/regl-scatterplot.mjs: hover is hit-tested here and drawn in SVG
    // (no WebGL redraw per hovered point); while a pan or zoom gesture runs and a redraw is
    // slow, the last frame is moved by a CSS transform and redrawn once the gesture ends.
    ownHover: true,
    deferRender: (viewChanged) => deferRender(viewChanged),
    onRendered: (ms) => onRendered(ms),
  });
  if (fit && !host.getBoundingClientRect().width && typeof ResizeObserver !== "undefined") {
    const ro = new ResizeObserver((entries) => {
      const width = entries[0].contentRect.width;
      if (!width) return;
      ro.disconnect();
      [W, H] = fitted(width);
      plot.style.width = `${W}px`;
      plot.style.height = `${H}px`;
      overlay.setAttribute("width", String(W));
      overlay.setAttribute("height", String(H));
      root.dataset.size = `${W}x${H}`;
      renderer.resize(W, H);
      scatterplot.set({ width: W, height: H });
    });
    ro.observe(host);
  }
  window.__mlnbExplorer = window.__mlnbExplorer || [];
  const api = { scatterplot, root, model };
  window.__mlnbExplorer.push(api); // for browser tests and the benchmark

  // -- state ---------------------------------------------------------------------------
  let xs = new Float32Array(0), ys = new Float32Array(0), zs = new Float32Array(0);
  let rawXY = new Float32Array(0);
  let selected = new Int32Array(0);
  let filterCat = null;
  let hovered = -1, mouseX = 0, mouseY = 0;
  const thumbs = new Map(); // index -> {url, fields}
  const pending = new Set();
  let hoverReq = 0;

  // -- gestures on a slow renderer: move the last frame, redraw once at the end ------------------
  // renderMs: the last real redraws' cost (a smoothed average). On a GPU it is a few ms and
  // every frame is drawn; with software GL at a million points it is ~300 ms, and a pan that
  // waited for each would move at 3 frames a second.
  let extremes = null; // indices of the points at the layout's extremes (for screenMap)
  let renderMs = 0, gesture = false, wheelTimer = null, shownMap = null, shifted = false;
  api.slowRenderMs = 24; // a redraw slower than this moves the last frame during gestures
  function deferRender(viewChanged) {
    if (!gesture || renderMs < api.slowRenderMs) return false;
    if (viewChanged) {
      // The moved frame is a copy on a second canvas: the real one keeps its place, so the
      // library's mouse positions (from its bounding box) stay right during the gesture.
      if (!shownMap) {
        shownMap = lastMap;
        ghost.width = canvas.width;
        ghost.height = canvas.height;
        ghost.getContext("2d").drawImage(canvas, 0, 0);
        ghost.style.display = "block";
        canvas.style.opacity = "0";
      }
      const now = screenMap();
      const sx = now.a / shownMap.a, sy = now.d / shownMap.d;
      ghost.style.transform = `matrix(${sx},0,0,${sy},${now.c - sx * shownMap.c},${now.f - sy * shownMap.f})`;
      shifted = true;
      root.dataset.deferred = String((+root.dataset.deferred || 0) + 1);
    }
    return true;
  }
  function onRendered(ms) {
    renderMs = renderMs ? 0.5 * renderMs + 0.5 * ms : ms;
    root.dataset.renderMs = String(Math.round(renderMs));
    lastMap = screenMap();
    shownMap = null;
    if (shifted) {
      ghost.style.display = "none";
      canvas.style.opacity = "";
      shifted = false;
    }
  }
  function endGesture() {
    if (!gesture) return;
    gesture = false;
    if (shifted) scatterplot.redraw();
  }
  let lastMap = null;

  function toNDC() {
    // One scale for both axes (the layout's shape is kept), centred, into [-0.95, 0.95].
    const dims = model.get("dims");
    const raw = f32(model.get("xy"));
    rawXY = raw;
    const n = raw.length / dims;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = raw[dims * i], y = raw[dims * i + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    const s = 1.9 / (Math.max(x1 - x0, y1 - y0) || 1);
    xs = new Float32Array(n);
    ys = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      xs[i] = (raw[dims * i] - cx) * s;
      ys[i] = (raw[dims * i + 1] - cy) * s;
    }
    api.toScreen = (i) => {
      // data point -> CSS pixels inside the canvas, through the current camera
      const [sx, sy] = scatterplot.getScreenPosition(i) || [NaN, NaN];
      return [sx, sy];
    };
    api.ndc = { cx, cy, s };
    extremes = null;
    buildIndex();
    lastMap = null;
  }

  function applyColors() {
    const spec = model.get("color_spec") || {};
    const n = xs.length;
    const codes = f32(model.get("codes"));
    zs = codes.length === n ? codes : new Float32Array(n);
    let colors;
    if (spec.kind === "categorical") colors = categoryColors(spec.categories.length).map(hslToHex).concat([NULL_COLOR]);
    else if (spec.kind === "continuous") colors = rampColors(spec.bins || 64).concat([NULL_COLOR]);
    else colors = ["#1f77b4"];
    api.colors = colors;
    scatterplot.set({
      colorBy: spec.kind === "categorical" || spec.kind === "continuous" ? "valueA" : null,
      pointColor: colors.length > 1 ? colors : colors[0],
      opacity: n > 200000 ? 0.6 : n > 50000 ? 0.8 : 1,
    });
    drawLegend(spec, colors);
  }

  let drawn = false;
  function draw({ transition = false } = {}) {
    const opts = { zDataType: "categorical" };
    if (selected.length) opts.select = Array.from(selected);
    if (transition && drawn) Object.assign(opts, { transition: true, transitionDuration: 750 });
    // The library drops its filter on every draw; a legend filter outlives a layout change
    // (hover and lasso skip the points it hides, so the plot must keep hiding them).
    if (filterCat !== null) opts.preventFilterReset = true;
    return scatterplot.draw({ x: xs, y: ys, z: zs }, opts).then(() => {
      if (!drawn) {
        drawn = true;
        root.dataset.firstDrawAt = String(Date.now());
      }
      root.dataset.drawnPoints = String(xs.length);
      root.dataset.drawCount = String((+root.dataset.drawCount || 0) + 1);
    });
  }

  // -- legend -------------------------------------------------------------------------
  function drawLegend(spec, colors) {
    legend.replaceChildren();
    if (!spec.kind || spec.kind === "none") return;
    legend.appendChild(el("div", "mlnb-legend-title", spec.column));
    if (spec.kind === "continuous") {
      const ramp = el("div", "mlnb-ramp");
      ramp.style.background = `linear-gradient(to right, ${VIRIDIS.join(",")})`;
      const ends = el("div", "mlnb-ramp-ends");
      ends.append(el("span", "", fmt(spec.min)), el("span", "", fmt(spec.max)));
      legend.append(ramp, ends);
      if (spec.nulls) legend.appendChild(el("div", "mlnb-legend-note", `${spec.nulls.toLocaleString()} without a value (grey)`));
      return;
    }
    const list = el("div", "mlnb-legend-list");
    const names = spec.categories.concat(spec.nulls ? ["(none)"] : []);
    const counts = spec.counts || [];
    names.forEach((name, k) => {
      const code = k < spec.categories.length ? k : spec.categories.length;
      const item = el("div", "mlnb-legend-item");
      item.dataset.code = String(code);
      const sw = el("span", "mlnb-swatch");
      sw.style.background = colors[code];
      const label = el("span", "mlnb-legend-name", name);
      label.title = name;
      const count = el("span", "mlnb-legend-count", counts[k] !== undefined ? counts[k].toLocaleString() : "");
      item.append(sw, label, count);
      item.title = "Click to show only this category; click again to show all";
      item.addEventListener("click", () => toggleFilter(code));
      list.appendChild(item);
    });
    legend.appendChild(list);
    markFilter();
  }

  function markFilter() {
    for (const item of legend.querySelectorAll(".mlnb-legend-item")) {
      item.classList.toggle("off", filterCat !== null && +item.dataset.code !== filterCat);
    }
  }

  function toggleFilter(code) {
    if (filterCat === code) {
      filterCat = null;
      scatterplot.unfilter();
    } else {
      filterCat = code;
      const keep = [];
      for (let i = 0; i < zs.length; i++) if (zs[i] === code) keep.push(i);
      scatterplot.filter(keep);
    }
    markFilter();
  }

  // -- hover tooltip at the cursor --------------------------------------------------------
  function placeTooltip() {
    const pad = 14;
    const tw = tooltip.offsetWidth || 170, th = tooltip.offsetHeight || 200;
    let left = mouseX + pad, top = mouseY + pad;
    if (left + tw > W) left = Math.max(0, mouseX - pad - tw);
    if (top + th > H) top = Math.max(0, mouseY - pad - th);
    tooltip.style.left = `${left}px`;
    tooltip.style.top = `${top}px`;
  }

  function showTooltip(i) {
    const t = thumbs.get(i);
    tooltip.style.display = "block";
    tooltip.dataset.index = String(i);
    if (t && t.url) {
      tipImg.src = t.url;
      tipImg.style.display = "block";
    } else {
      tipImg.removeAttribute("src");
      tipImg.style.display = model.get("has_images") ? "block" : "none";
    }
    tipFields.replaceChildren();
    for (const [k, v] of Object.entries((t && t.fields) || {})) {
      const row = el("div", "mlnb-tip-row");
      row.append(el("span", "mlnb-tip-key", k), el("span", "mlnb-tip-val", fmt(v)));
      tipFields.appendChild(row);
    }
    tooltip.dataset.ready = t && t.fields ? "1" : "0";
    placeTooltip();
  }

  // A uniform grid over the layout (counting sort: two passes, typed arrays) answers "which
  // point is under the cursor" in a few cells, without asking the library (whose answer
  // comes with a full redraw).
  let index = null;
  function buildIndex() {
    const n = xs.length;
    const g = Math.max(1, Math.min(2048, Math.ceil(Math.sqrt(n / 4))));
    const cellOf = new Int32Array(n), start = new Int32Array(g * g + 1), order = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const cx = Math.min(g - 1, Math.max(0, Math.floor(((xs[i] + 1) / 2) * g)));
      const cy = Math.min(g - 1, Math.max(0, Math.floor(((ys[i] + 1) / 2) * g)));
      cellOf[i] = cy * g + cx;
      start[cellOf[i] + 1] += 1;
    }
    for (let k = 0; k < g * g; k++) start[k + 1] += start[k];
    const fill = start.slice(0, g * g);
    for (let i = 0; i < n; i++) order[fill[cellOf[i]]++] = i;
    index = { g, start, order };
  }
  function pointAt(mx, my) {
    if (!index || !xs.length) return -1;
    const m = lastMap || screenMap();
    const x = (mx - m.c) / m.a, y = (my - m.f) / m.d;
    const rPx = Math.max(4, pointSize), r = rPx / Math.abs(m.a);
    const { g, start, order } = index;
    const c0 = Math.max(0, Math.floor(((x - r + 1) / 2) * g)), c1 = Math.min(g - 1, Math.floor(((x + r + 1) / 2) * g));
    const r0 = Math.max(0, Math.floor(((y - r + 1) / 2) * g)), r1 = Math.min(g - 1, Math.floor(((y + r + 1) / 2) * g));
    let best = -1, bestD = r * r;
    for (let cy = r0; cy <= r1; cy++) {
      for (let cx = c0; cx <= c1; cx++) {
        const k = cy * g + cx;
        for (let p = start[k]; p < start[k + 1]; p++) {
          const i = order[p];
          if (filterCat !== null && zs[i] !== filterCat) continue;
          const dx = xs[i] - x, dy = ys[i] - y, d = dx * dx + dy * dy;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }
  api.pointAt = pointAt;

  function placeRing(i) {
    if (i < 0) {
      ring.style.display = "none";
      return;
    }
    const m = lastMap || screenMap();
    ring.setAttribute("cx", String(m.a * xs[i] + m.c));
    ring.setAttribute("cy", String(m.d * ys[i] + m.f));
    ring.setAttribute("r", String(Math.max(3, pointSize / 2 + 2.5)));
    ring.style.display = "";
  }

  let hoverFrame = 0;
  canvas.addEventListener("mousemove", (e) => {
    const r = canvas.getBoundingClientRect();
    mouseX = e.clientX - r.left;
    mouseY = e.clientY - r.top;
    if (hovered >= 0) placeTooltip();
    if (e.buttons || lasso || hoverFrame) return; // no hover while a button is down (pan, lasso)
    hoverFrame = requestAnimationFrame(() => {
      hoverFrame = 0;
      const i = pointAt(mouseX, mouseY);
      if (i !== hovered) (i >= 0 ? pointOver(i) : pointOut());
    });
  });
  canvas.addEventListener("mouseleave", () => {
    if (hovered >= 0) pointOut();
    tooltip.style.display = "none";
  });
  function pointOver(i) {
    hovered = i;
    placeRing(i);
    root.dataset.hovered = String(i);
    root.dataset.hoverAt = String(performance.now());
    const t = thumbs.get(i);
    if (!t || !t.fields) {
      hoverReq += 1;
      model.send({ type: "hover", index: i, req: hoverReq });
    }
    showTooltip(i);
  }
  function pointOut() {
    hovered = -1;
    delete root.dataset.hovered;
    tooltip.style.display = "none";
    placeRing(-1);
  }
  // A pan or zoom moves the points away from the ring and the tooltip.
  scatterplot.subscribe("view", () => {
    if (hovered >= 0) pointOut();
  });

  function remember(i, entry) {
    const old = thumbs.get(i) || {};
    thumbs.delete(i);
    thumbs.set(i, { ...old, ...entry });
    if (thumbs.size > THUMB_CACHE) {
      const [k, v] = thumbs.entries().next().value;
      if (v.url) URL.revokeObjectURL(v.url);
      thumbs.delete(k);
    }
  }

  function blobUrl(buf) {
    if (!buf || !buf.byteLength) return "";
    return URL.createObjectURL(new Blob([buf], { type: "image/jpeg" }));
  }

  model.on("msg:custom", (msg, buffers) => {
    if (msg.type === "hover") {
      remember(msg.index, { fields: msg.fields, url: blobUrl(buffers && buffers[0]) });
      if (hovered === msg.index) {
        showTooltip(msg.index);
        tooltip.dataset.thumbAt = String(performance.now());
      }
    } else if (msg.type === "thumbs") {
      msg.indices.forEach((i, k) => {
        pending.delete(i);
        if (!thumbs.has(i) || !thumbs.get(i).url) remember(i, { url: blobUrl(buffers[k]), title: msg.titles ? msg.titles[k] : "" });
      });
      renderGrid();
    } else if (msg.type === "select") {
      // a selection made from Python or SQL
      selected = i32(buffers[0]);
      scatterplot.select(Array.from(selected), { preventEvent: true });
      afterSelection(false);
    }
  });

  // -- selection -----------------------------------------------------------------------
  function afterSelection(send) {
    const n = selected.length;
    selCount.textContent = n ? `${n.toLocaleString()} points in the selection` : "Nothing selected: drag a lasso or a box.";
    root.dataset.selected = String(n);
    actions.style.display = n ? "flex" : "none";
    grid.scrollTop = 0;
    gridInner.style.height = `${Math.ceil(n / gridCols()) * TILE}px`;
    renderGrid();
    if (send) {
      root.dataset.selectSentAt = String(Date.now());
      model.send({ type: "select", n }, undefined, [selected.buffer.slice(0)]);
    }
  }

  scatterplot.subscribe("select", ({ points }) => {
    selected = Int32Array.from(points);
    afterSelection(true);
  });
  scatterplot.subscribe("deselect", () => {
    selected = new Int32Array(0);
    afterSelection(true);
  });

  function deselect() {
    if (selected.length) scatterplot.deselect();
  }

  // A click on empty space clears (a click on a point selects it, as regl-scatterplot does).
  // A press that moved (a lasso that ends where it began, a pan) is not a click: the click
  // that follows it is swallowed before regl-scatterplot sees it, so it cannot replace a
  // lasso's selection with one point.
  let downAt = null, moved = 0;
  plot.addEventListener("mousedown", (e) => {
    downAt = [e.clientX, e.clientY];
    moved = 0;
    root.focus({ preventScroll: true });
  }, true);
  window.addEventListener("mousemove", (e) => {
    if (downAt) moved = Math.max(moved, Math.hypot(e.clientX - downAt[0], e.clientY - downAt[1]));
  }, true);
  plot.addEventListener("click", (e) => {
    const wasDrag = !downAt || moved > 3;
    downAt = null;
    if (wasDrag) {
      e.stopPropagation();
      return;
    }
    if (hovered < 0 && !e.shiftKey) setTimeout(deselect, 0);
  }, true);
  canvas.addEventListener("dblclick", () => scatterplot.zoomToOrigin({ transition: true, transitionDuration: 300 }));
  // The wheel zooms the plot; it must not also scroll the notebook.
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    gesture = true;
    clearTimeout(wheelTimer);
    wheelTimer = setTimeout(endGesture, 150);
  }, { passive: false });
  plot.addEventListener("mousedown", (e) => {
    if (e.button === 0 && !lasso) gesture = true; // a pan (a lasso or box stops the event earlier)
  });
  window.addEventListener("mouseup", () => {
    if (gesture) setTimeout(endGesture, 0);
  });
  root.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      // In the label or table-name box, Esc leaves the box; the selection stays.
      if (e.target instanceof HTMLInputElement) {
        e.target.blur();
        root.focus({ preventScroll: true });
      } else deselect();
      e.stopPropagation();
    }
  });

  // -- lasso and box ---------------------------------------------------------------------------
  const SVGNS = "http://www.w3.org/2000/svg";
  const overlay = document.createElementNS(SVGNS, "svg");
  overlay.setAttribute("class", "mlnb-lasso");
  overlay.setAttribute("width", String(W));
  overlay.setAttribute("height", String(H));
  const shape = document.createElementNS(SVGNS, "polygon");
  const ring = document.createElementNS(SVGNS, "circle");
  ring.setAttribute("class", "mlnb-hover-ring");
  ring.style.display = "none";
  overlay.append(shape, ring);
  plot.appendChild(overlay);
  let lasso = null;

  function canvasXY(e) {
    const r = canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }

  function lassoPolygon() {
    if (!lasso) return [];
    if (lasso.box) {
      const [[x0, y0]] = lasso.pts, [x1, y1] = lasso.pts[lasso.pts.length - 1];
      return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
    }
    return lasso.pts;
  }

  plot.addEventListener("mousedown", (e) => {
    if (e.button !== 0 || !(mode !== "pan" || e.shiftKey)) return;
    // Ours, not the library's: no pan while drawing.
    e.preventDefault();
    e.stopPropagation();
    lasso = { box: mode === "box", pts: [canvasXY(e)] };
    tooltip.style.display = "none";
  }, true);
  window.addEventListener("mousemove", (e) => {
    if (!lasso) return;
    e.stopPropagation(); // no hover tests (each a redraw) while a shape is drawn
    const p = canvasXY(e), q = lasso.pts[lasso.pts.length - 1];
    if (lasso.box) lasso.pts[1] = p;
    else if (Math.hypot(p[0] - q[0], p[1] - q[1]) >= 1) lasso.pts.push(p);
    shape.setAttribute("points", lassoPolygon().map((v) => v.join(",")).join(" "));
  }, true);
  window.addEventListener("mouseup", (e) => {
    if (!lasso) return;
    e.stopPropagation();
    const p = canvasXY(e);
    if (lasso.box) lasso.pts[1] = p;
    else lasso.pts.push(p);
    const poly = lassoPolygon();
    const merge = e.metaKey || e.ctrlKey;
    lasso = null;
    shape.setAttribute("points", "");
    if (poly.length < 3 || Math.abs(area(poly)) < 4) return; // a click, not a shape
    selectPolygon(poly, merge);
  }, true);

  function area(poly) {
    let a = 0;
    for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) a += (poly[j][0] + poly[i][0]) * (poly[j][1] - poly[i][1]);
    return a / 2;
  }

  function screenMap() {
    // The camera maps layout to screen by a scale and a shift per axis: learn them from the
    // points at the extremes (exact, and no per-point library call at a million points).
    if (!extremes) {
      const n = xs.length;
      let ix0 = 0, ix1 = 0, iy0 = 0, iy1 = 0;
      for (let i = 1; i < n; i++) {
        if (xs[i] < xs[ix0]) ix0 = i; if (xs[i] > xs[ix1]) ix1 = i;
        if (ys[i] < ys[iy0]) iy0 = i; if (ys[i] > ys[iy1]) iy1 = i;
      }
      extremes = [ix0, ix1, iy0, iy1];
    }
    const [ix0, ix1, iy0, iy1] = extremes;
    const p = (i) => scatterplot.getScreenPosition(i);
    const [ux0] = p(ix0), [ux1] = p(ix1), [, vy0] = p(iy0), [, vy1] = p(iy1);
    const a = xs[ix1] > xs[ix0] ? (ux1 - ux0) / (xs[ix1] - xs[ix0]) : 1;
    const d = ys[iy1] > ys[iy0] ? (vy1 - vy0) / (ys[iy1] - ys[iy0]) : -1;
    return { a, c: ux0 - a * xs[ix0], d, f: vy0 - d * ys[iy0] };
  }
  api.screenMap = screenMap;

  function selectPolygon(poly, merge) {
    const t0 = performance.now();
    const { a, c, d, f } = screenMap();
    let bx0 = Infinity, bx1 = -Infinity, by0 = Infinity, by1 = -Infinity;
    for (const [x, y] of poly) {
      if (x < bx0) bx0 = x; if (x > bx1) bx1 = x; if (y < by0) by0 = y; if (y > by1) by1 = y;
    }
    const m = poly.length, px = new Float64Array(m), py = new Float64Array(m);
    poly.forEach(([x, y], k) => { px[k] = x; py[k] = y; });
    const out = [];
    const n = xs.length;
    for (let i = 0; i < n; i++) {
      if (filterCat !== null && zs[i] !== filterCat) continue;
      const u = a * xs[i] + c, v = d * ys[i] + f;
      if (u < bx0 || u > bx1 || v < by0 || v > by1) continue;
      let inside = false;
      for (let k = 0, j = m - 1; k < m; j = k++) {
        if ((py[k] > v) !== (py[j] > v) && u < ((px[j] - px[k]) * (v - py[k])) / (py[j] - py[k]) + px[k]) inside = !inside;
      }
      if (inside) out.push(i);
    }
    if (merge) for (const i of selected) out.push(i);
    root.dataset.lassoMs = String(Math.round(performance.now() - t0));
    if (!out.length) return deselect();
    // The kernel hears first; the (at a million points, slow) redraw comes a moment later,
    // so the message is on the wire before the page is busy drawing.
    const pts = merge ? Array.from(new Set(out)) : out;
    selected = Int32Array.from(pts);
    afterSelection(true);
    setTimeout(() => scatterplot.select(pts, { preventEvent: true }), 40);
  }

  // -- virtualised grid of the selection ---------------------------------------------------
  function gridCols() {
    return Math.max(1, Math.floor((grid.clientWidth || 300) / TILE));
  }
  let thumbTimer = null;
  const tiles = new Map(); // position -> element
  function renderGrid() {
    const n = selected.length;
    const cols = gridCols();
    gridInner.style.height = `${Math.ceil(n / cols) * TILE}px`;
    const first = Math.max(0, Math.floor(grid.scrollTop / TILE) - 1) * cols;
    const last = Math.min(n, (Math.ceil((grid.scrollTop + (grid.clientHeight || 300)) / TILE) + 1) * cols);
    const want = [];
    for (const [pos, tile] of tiles) {
      if (pos < first || pos >= last || pos >= n) {
        tile.remove();
        tiles.delete(pos);
      }
    }
    for (let pos = first; pos < last; pos++) {
      const i = selected[pos];
      let tile = tiles.get(pos);
      if (!tile || +tile.dataset.index !== i) {
        if (tile) tile.remove();
        tile = el("div", "mlnb-tile");
        tile.dataset.index = String(i);
        tile.style.left = `${(pos % cols) * TILE}px`;
        tile.style.top = `${Math.floor(pos / cols) * TILE}px`;
        tile.title = "Click to find this point";
        tile.addEventListener("click", () => centre(i));
        gridInner.appendChild(tile);
        tiles.set(pos, tile);
      }
      const t = thumbs.get(i);
      if (t && t.url !== undefined) {
        if (!tile.firstChild) {
          if (t.url) {
            const img = el("img");
            img.src = t.url;
            tile.appendChild(img);
          } else tile.appendChild(el("span", "mlnb-tile-text", t.title || String(i)));
        }
      } else if (!pending.has(i)) want.push(i);
    }
    root.dataset.gridFirst = String(first);
    root.dataset.gridTiles = String(tiles.size);
    if (want.length) {
      for (const i of want) pending.add(i);
      clearTimeout(thumbTimer);
      const batch = want.slice();
      thumbTimer = setTimeout(() => model.send({ type: "thumbs", indices: batch }), 30);
    }
  }
  grid.addEventListener("scroll", () => requestAnimationFrame(renderGrid));

  function centre(i) {
    const [x, y] = [xs[i], ys[i]];
    scatterplot.zoomToLocation([x, y], 0.25, { transition: true, transitionDuration: 400 }).then(() => {
      lastMap = screenMap();
      placeRing(i);
    });
    root.dataset.centred = String(i);
  }

  // -- controls ------------------------------------------------------------------------------
  let mode = "pan";
  function setMode(m) {
    mode = m;
    for (const [k, b] of Object.entries(modeButtons)) b.classList.toggle("on", k === m);
    root.dataset.mode = m;
  }
  for (const [k, b] of Object.entries(modeButtons)) b.addEventListener("click", () => setMode(k));
  setMode("pan");
  resetBtn.addEventListener("click", () => scatterplot.zoomToOrigin({ transition: true, transitionDuration: 300 }));
  clearBtn.addEventListener("click", deselect);
  labelBtn.addEventListener("click", () => {
    const v = labelInput.value.trim();
    if (v) model.send({ type: "label", label: v });
  });
  labelInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") labelBtn.click();
  });
  saveBtn.addEventListener("click", () => {
    const v = saveInput.value.trim();
    if (v) model.send({ type: "save", name: v });
  });
  colorSel.addEventListener("change", () => model.send({ type: "color", column: colorSel.value }));
  layoutSel.addEventListener("change", () => model.send({ type: "layout", method: layoutSel.value }));

  function fillSelect(sel, options, value) {
    sel.replaceChildren();
    for (const o of options) {
      const opt = el("option", "", o.label);
      opt.value = o.value;
      sel.appendChild(opt);
    }
    sel.value = value;
  }

  function syncControls() {
    fillSelect(colorSel, [{ value: "", label: "(none)" }].concat(model.get("color_columns").map((c) => ({ value: c, label: c }))), (model.get("color_spec") || {}).column || "");
    fillSelect(layoutSel, model.get("layouts").map((m) => ({ value: m, label: m })), model.get("pending") || model.get("layout"));
  }

  function syncText() {
    progress.textContent = model.get("progress");
    progress.style.display = model.get("progress") ? "inline" : "none";
    status.textContent = model.get("status");
    error.textContent = model.get("error");
    message.textContent = model.get("message");
    message.style.display = model.get("message") ? "block" : "none";
  }

  function syncProblem() {
    const p = model.get("problem");
    problem.textContent = p;
    problem.style.display = p ? "block" : "none";
    body.style.display = p ? "none" : "block";
  }

  model.on("change:progress change:status change:error change:message", syncText);
  model.on("change:problem", syncProblem);
  model.on("change:color_columns change:layouts change:layout change:pending", syncControls);
  model.on("change:codes", () => {
    // A new colour: the old legend filter (and its marks) go, and hover fields, which show
    // the colour's value, are asked again (thumbnails stay).
    filterCat = null;
    for (const [i, t] of thumbs) if (t.fields) thumbs.set(i, { ...t, fields: undefined });
    applyColors();
    syncControls();
    draw();
  });
  model.on("change:xy", () => {
    toNDC();
    draw({ transition: true });
  });

  syncProblem();
  syncText();
  syncControls();
  if (!model.get("problem")) {
    // A selection made before this view was drawn (from Python, or in another view of the widget).
    selected = i32(model.get("selected"));
    toNDC();
    applyColors();
    draw();
    afterSelection(false);
  }

  return () => {
    for (const v of thumbs.values()) if (v.url) URL.revokeObjectURL(v.url);
    scatterplot.destroy();
    renderer.destroy();
    const k = window.__mlnbExplorer.indexOf(api);
    if (k >= 0) window.__mlnbExplorer.splice(k, 1);
  };
}

export default { render };
