// Admin page (after common.js): add and revoke reviewers' links. Names go in as text only.
"use strict";
function cell(tag, text) { return el(tag, {}, text); }
function show(list) {
  const rows = [document.createElement("tr")];
  ["reviewer", "link", "made", ""].forEach((h) => rows[0].append(cell("th", h)));
  for (const r of list.reviewers) {
    const tr = document.createElement("tr"); tr.dataset.name = r.name;
    tr.append(cell("td", r.name), cell("td", r.role === "admin" ? "admin (new at each start)" : r.live ? "live" : "revoked"),
      cell("td", new Date(r.issued_at * 1000).toLocaleString()));
    const act = document.createElement("td");
    if (r.role !== "admin" && r.live) {
      const b = cell("button", "Revoke"); b.className = "revoke";
      b.addEventListener("click", () => post("/api/admin/revoke", { name: r.name }).then((s) => s && (show(s), toast(`revoked ${r.name}'s link`))));
      act.append(b);
    }
    tr.append(act); rows.push(tr);
  }
  $("#reviewers").replaceChildren(...rows);
}
$("#add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const s = await post("/api/admin/add", { name: $("#add-name").value });
  if (!s) return;
  show(s);
  $("#new-link-name").textContent = s.added;
  $("#new-link-url").value = `${location.origin}/?token=${encodeURIComponent(s.token)}`;
  $("#new-link").classList.remove("hidden");
  $("#add-name").value = "";
});
fetch("/api/admin/reviewers").then((r) => r.json()).then(show);
