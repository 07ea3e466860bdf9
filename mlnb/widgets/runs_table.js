// The trainer's runs table: a click on a column header sorts by it (again: the other way),
// a click on a row picks that run. Sorting happens in the kernel; this only draws `rows`.
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "mlnb-runs-wrap";
  el.appendChild(root);
  function draw() {
    root.innerHTML = "";
    const cols = model.get("columns");
    const sortBy = model.get("sort_by");
    const desc = model.get("descending");
    const table = document.createElement("table");
    table.className = "mlnb-runs";
    const head = table.createTHead().insertRow();
    cols.forEach((c) => {
      const th = document.createElement("th");
      th.textContent = c.title + (c.name === sortBy ? (desc ? " ▼" : " ▲") : "");
      th.title = `sort by ${c.title}`;
      th.dataset.col = c.name;
      th.onclick = () => {
        model.set("descending", c.name === sortBy ? !desc : c.name !== "created" ? ["accuracy", "macro_f1"].includes(c.name) : true);
        model.set("sort_by", c.name);
        model.save_changes();
      };
      head.appendChild(th);
    });
    const body = table.createTBody();
    model.get("rows").forEach((r) => {
      const tr = body.insertRow();
      tr.dataset.run = r.run;
      if (r.run === model.get("selected")) tr.className = "selected";
      if (r._pickable) tr.classList.add("pickable");
      cols.forEach((c) => { tr.insertCell().textContent = r[c.name] ?? ""; });
      tr.onclick = () => { if (r._pickable) { model.set("selected", r.run); model.save_changes(); } };
    });
    root.appendChild(table);
  }
  ["rows", "columns", "sort_by", "descending", "selected"].forEach((n) => model.on(`change:${n}`, draw));
  draw();
}
export default { render };
