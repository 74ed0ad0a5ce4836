// The admin page's named lists for agents' states: pause reasons (each productive or
// not) and dispositions; add, remove. The server checks everything (web.pause_reasons,
// web.dispositions) and says why it refuses.
"use strict";
(() => {
  const status = (text) => sb.say("admin-status", text);
  const guard = (fn) => async (...args) => {
    try { await fn(...args); } catch (e) { status(e.message); }
  };

  // One list: where it is read, added and removed, and what its rows say.
  function namedList({ table, form, read, key, admin, what, cells, body, removeNote }) {
    const load = guard(async () => {
      const data = await (await fetch(read)).json();
      const tbody = document.querySelector(`#${table} tbody`);
      tbody.replaceChildren();
      for (const row of data[key]) {
        const tr = document.createElement("tr");
        tr.dataset.name = row.name;
        for (const text of [row.name, ...cells(row)]) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.appendChild(td);
        }
        const remove = Object.assign(document.createElement("button"),
          { type: "button", textContent: "Remove", className: "remove" });
        remove.addEventListener("click", guard(async () => {
          if (!confirm(`Remove ${what} ${row.name}? ${removeNote}`)) return;
          await sb.send("POST", `${admin}/${row.id}/remove`, {});
          status(`${what[0].toUpperCase()}${what.slice(1)} ${row.name} removed.`);
          load();
        }));
        const td = document.createElement("td");
        td.appendChild(remove);
        tr.appendChild(td);
        tbody.appendChild(tr);
      }
    });
    document.getElementById(form).addEventListener("submit", guard(async (ev) => {
      ev.preventDefault();
      const added = await sb.send("POST", admin, body(ev.target));
      status(`${what[0].toUpperCase()}${what.slice(1)} ${Object.values(added)[0].name} added.`);
      ev.target.reset();
      load();
    }));
    load();
  }

  namedList({
    table: "pause-reasons", form: "new-pause-reason", read: "/api/admin/pause-reasons",
    key: "pause_reasons", admin: "/api/admin/pause-reasons", what: "pause reason",
    cells: (r) => [r.productive ? "Productive" : "Not productive"],
    body: (f) => ({ name: f.name.value, productive: f.productive.value === "true" }),
    removeNote: "Agents away for it keep it.",
  });
  namedList({
    table: "dispositions", form: "new-disposition", read: "/api/dispositions",
    key: "dispositions", admin: "/api/admin/dispositions", what: "disposition",
    cells: () => [], body: (f) => ({ name: f.name.value }),
    removeNote: "Calls that have it keep it.",
  });
})();
