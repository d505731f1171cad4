// Taxonomy review page (after common.js). Names and notes go in as text, never as HTML.
"use strict";
const S = { nodes: new Map(), order: [], summary: null, groups: [], selected: null, open: new Set(), me: document.body.dataset.reviewer };
const LINKS = document.body.dataset.mode === "links";  // each reviewer their own link: no name to type
if (location.search) history.replaceState(null, "", "/");  // the link's token stays out of history
post.failed = (status, error) => { if (status === 401) askName(); if (status === 403) lost(error); };
function load(state) {
  S.nodes = new Map(state.nodes.map((n) => [n.id, n]));
  S.order = state.nodes.map((n) => n.id);
  S.summary = state.summary;
  S.groups = state.groups;
  render();
}
async function refresh() {
  const res = await fetch("/api/state");
  if (res.ok) load(await res.json());
  else if (res.status === 403) lost((await res.json().catch(() => ({}))).error);
}
function lost(why) {  // a revoked link: say so over the whole page, nothing more can be done here
  if (!LINKS || $(".links-lost")) return;
  document.body.append(el("div", { class: "links-lost", id: "lost" }, `${why || "This review link no longer works"}. Ask whoever runs the review for a new link.`));
}
const myVote = (n) => (n.votes.find((v) => v.reviewer === S.me) || {}).vote;
const kids = (n) => n.children.map((id) => S.nodes.get(id));
function leafCount(n) { return n.level === "discipline" ? 1 : kids(n).reduce((a, c) => a + leafCount(c), 0); }
function keptCount(n) { return n.state !== "kept" ? 0 : n.level === "discipline" ? 1 : kids(n).reduce((a, c) => a + keptCount(c), 0); }
function matches(n) {
  const q = $("#search").value.trim().toLowerCase(), f = $("#filter").value;
  if (q && !(n.name.toLowerCase().includes(q) || (n.description || "").toLowerCase().includes(q))) return false;
  if (f === "mine") return !myVote(n) && n.state !== "removed-by-ancestor";
  if (f === "novote") return n.votes.length === 0 && n.state !== "removed-by-ancestor";
  if (f === "ties") return n.tally.tie;
  if (f === "removed") return n.state === "removed";
  if (f === "proposals") return n.proposal || n.renames.length > 0 || n.group_changes.length > 0;
  return true;
}
function filtering() { return $("#search").value.trim() !== "" || $("#filter").value !== "all"; }
function visibleIds() {
  const out = [], f = filtering();
  const shown = (n) => matches(n) || kids(n).some(shown);
  const walk = (n) => {
    if (f && !shown(n)) return;
    out.push(n.id);
    if (S.open.has(n.id) || f) kids(n).forEach(walk);
  };
  S.order.map((id) => S.nodes.get(id)).filter((n) => !n.parent_id).forEach(walk);
  return out;
}
function stateBadge(n) {
  if (n.state === "pending") return el("span", { class: "badge pending" }, "proposal · pending");
  if (n.state === "removed") return el("span", { class: "badge removed" }, "removed");
  if (n.state === "removed-by-ancestor") return el("span", { class: "badge removed" }, "removed with parent");
  if (n.tally.tie) return el("span", { class: "badge tie" }, "tie · kept");
  if (n.tally.decision === "undecided" && n.votes.length) return el("span", { class: "badge novote" }, "below quorum");
  if (!n.votes.length && !n.tally.fixed) return el("span", { class: "badge novote" }, "no votes");
  return el("span", { class: "badge kept" }, n.proposal ? "proposal · accepted" : "kept");
}
function rowFor(n) {
  const mine = myVote(n), hasKids = n.children.length > 0, f = filtering();
  const li = el("li", { class: `level-${n.level} state-${n.state}`, "data-id": n.id, role: "treeitem" });
  const row = el("div", { class: "row" + (S.selected === n.id ? " selected" : ""), onclick: () => select(n.id, true) },
    el("span", { class: "twisty", onclick: (e) => { e.stopPropagation(); toggle(n.id); } }, hasKids ? (S.open.has(n.id) || f ? "▼" : "▶") : ""),
    el("span", { class: "name", title: n.description || n.name }, n.name),
    n.level === "field" ? el("span", { class: "grp", title: "GLAN-Test group" }, n.group || "no group") : null,
    n.level !== "discipline" ? el("span", { class: "count" }, `${keptCount(n)}/${leafCount(n)}`) : null,
    n.votes.length ? el("span", { class: "tally" }, el("span", { class: "k" }, `✓${n.tally.keep}`), " ", el("span", { class: "r" }, `✗${n.tally.remove}`)) : null,
    mine ? el("span", { class: `badge mine-${mine}` }, `me: ${mine}`) : null,
    stateBadge(n));
  li.append(row);
  return li;
}
function render() {
  const tree = $("#tree"); tree.replaceChildren();
  const f = filtering(), shown = (n) => matches(n) || kids(n).some(shown);
  const build = (n, parent) => {
    if (f && !shown(n)) return;
    const li = rowFor(n); parent.append(li);
    if (n.children.length && (S.open.has(n.id) || f)) { const ul = el("ul", { role: "group" }); li.append(ul); kids(n).forEach((c) => build(c, ul)); }
  };
  S.order.map((id) => S.nodes.get(id)).filter((n) => !n.parent_id).forEach((n) => build(n, tree));
  const s = S.summary;
  $("#counts").replaceChildren(el("b", {}, s.kept_disciplines), " disciplines kept · ", el("b", {}, s.no_votes.length),
    " nodes without a vote · ", el("b", {}, s.ties.length), " ties · ", el("b", {}, s.pending.length), " pending proposals");
  renderDetail();
  if (!$("#view-summary").classList.contains("hidden")) renderSummary();
}
function pathOf(n) { const p = []; for (let x = n; x; x = x.parent_id && S.nodes.get(x.parent_id)) p.unshift(x.name); return p.join(" / "); }
function voteButtons(target, mine, noteBox) {
  const send = (vote) => post("/api/vote", { target, vote, note: noteBox ? noteBox.value : "" }).then((s) => s && (load(s), toast(vote === "clear" ? "vote withdrawn" : `voted ${vote}`)));
  return el("div", { class: "votebar" },
    el("button", { class: "keep" + (mine === "keep" ? " on" : ""), onclick: () => send("keep") }, "✓ Keep (K)"),
    el("button", { class: "remove" + (mine === "remove" ? " on" : ""), onclick: () => send("remove") }, "✗ Remove (R)"),
    mine ? el("button", { onclick: () => send("clear") }, "Withdraw (U)") : null);
}
function voterList(votes) {
  if (!votes.length) return el("p", { class: "hint" }, "No votes yet.");
  return el("ul", { class: "voters" }, ...votes.map((v) => el("li", {},
    el("span", { class: `badge mine-${v.vote}` }, v.vote), " ", el("strong", {}, v.reviewer), v.note ? el("span", { class: "note" }, `— ${v.note}`) : null)));
}
function renderDetail() {
  const box = $("#detail"), n = S.nodes.get(S.selected);
  if (!n) return;
  const active = document.activeElement, keepNote = active && active.id === "note" ? active.value : null;
  const note = el("textarea", { id: "note", maxlength: document.body.dataset.maxNote, placeholder: "Optional note: why keep or remove? (sent with your vote)" });
  note.value = keepNote ?? ((n.votes.find((v) => v.reviewer === S.me) || {}).note || "");
  const parts = [
    el("div", { class: "path" }, `${n.level} · ${pathOf(n)}`),
    el("h2", {}, n.name, " ", stateBadge(n)),
    n.name !== n.original_name ? el("div", { class: "path" }, `renamed from “${n.original_name}”`) : null,
    n.description ? el("p", { class: "desc" }, n.description) : null,
    n.proposed_by ? el("p", { class: "notice" }, `Proposed by ${n.proposed_by}: it is added if a majority votes keep.`) : null,
    n.state === "removed-by-ancestor" ? el("p", { class: "notice" }, "A parent is removed: votes here are kept but count only if that removal is overturned.") : null,
    n.tally.fixed ? el("p", { class: "notice" }, `Fixed by status: ${n.status} in the YAML.`) : null,
    voteButtons(n.id, myVote(n), note), note,
    el("div", { class: "panel" }, el("h3", {}, `Votes · ✓ ${n.tally.keep} keep · ✗ ${n.tally.remove} remove`), voterList(n.votes)),
  ];
  const renames = el("div", { class: "panel" }, el("h3", {}, "Renames"));
  for (const r of n.renames) {
    const mine = (r.votes.find((v) => v.reviewer === S.me) || {}).vote;
    renames.append(el("div", {}, el("strong", {}, `“${r.new_name}”`), ` proposed by ${r.proposed_by} · ✓${r.tally.keep} ✗${r.tally.remove} · ${r.accepted ? "accepted" : "not accepted"}`,
      voteButtons(r.id, mine, null)));
  }
  const rn = el("input", { placeholder: "propose a new name", maxlength: 120 });
  renames.append(el("div", { class: "inline" }, rn, el("button", { onclick: () => rn.value.trim() && post("/api/rename", { target: n.id, name: rn.value }).then((s) => s && (load(s), toast("rename proposed"))) }, "Propose rename")));
  parts.push(renames, groupPanel(n));
  if (n.level !== "discipline") {
    const nm = el("input", { placeholder: `new ${n.level === "field" ? "sub-field" : "discipline"} under ${n.name}`, maxlength: 120, id: "propose-name" });
    const ds = el("input", { placeholder: "description (optional)", maxlength: 2000 });
    parts.push(el("div", { class: "panel" }, el("h3", {}, "Propose a child"), el("div", { class: "inline" }, nm, ds,
      el("button", { id: "propose", onclick: () => nm.value.trim() && post("/api/propose", { parent: n.id, name: nm.value, description: ds.value }).then((s) => s && (S.open.add(n.id), load(s), toast("proposal added"))) }, "Propose"))));
  }
  box.replaceChildren(...parts.filter(Boolean));
  if (keepNote !== null) { note.focus(); }
}
function groupPanel(n) {
  const panel = el("div", { class: "panel", id: "group-panel" }, el("h3", {}, "GLAN-Test group"));
  const current = el("p", {}, "This ", n.level, " reports under ", el("strong", { class: "group-name" }, n.group || "no group yet"));
  if (n.level !== "field") {
    const field = S.nodes.get(S.nodes.get(n.parent_id).parent_id || n.parent_id);
    panel.append(current, el("p", { class: "hint" }, "A group is set on the field: ",
      el("button", { class: "link", onclick: () => select(field.id, true) }, `change it on ${field.name}`),
      n.level === "discipline" ? ", or propose one for this discipline alone below" : ""));
    if (n.level === "subfield") return panel;
  } else {
    panel.append(current);
  }
  if (n.original_group !== n.group) panel.append(el("p", { class: "path" }, `was “${n.original_group || "no group"}” before an accepted change`));
  for (const g of n.group_changes) {
    const mine = (g.votes.find((v) => v.reviewer === S.me) || {}).vote;
    panel.append(el("div", { class: "group-change" }, el("strong", {}, g.group), ` proposed by ${g.proposed_by} · ✓${g.tally.keep} ✗${g.tally.remove} · ${g.accepted ? "accepted" : "not accepted"}`,
      voteButtons(g.id, mine, null)));
  }
  const list = el("datalist", { id: "group-options" }, ...S.groups.map((g) => el("option", { value: g })));
  const box = el("input", { id: "group-input", list: "group-options", placeholder: "propose a group, e.g. academic_humanities", maxlength: 40 });
  panel.append(el("div", { class: "inline" }, box, list, el("button", { id: "propose-group", onclick: () => box.value.trim() && post("/api/group", { target: n.id, group: box.value }).then((s) => s && (load(s), toast("group change proposed"))) }, "Propose group")));
  return panel;
}
function select(id, fromClick) {
  S.selected = id;
  for (let p = S.nodes.get(id).parent_id; p; p = S.nodes.get(p).parent_id) S.open.add(p);  // stays visible when the search clears
  render();
  const row = document.querySelector(`li[data-id="${id}"] > .row`); if (row) row.scrollIntoView({ block: "nearest" });
  if (fromClick) document.activeElement.blur();
}
function toggle(id) { S.open.has(id) ? S.open.delete(id) : S.open.add(id); render(); }
function move(delta) {
  const ids = visibleIds(); if (!ids.length) return;
  const i = ids.indexOf(S.selected);
  select(ids[Math.max(0, Math.min(ids.length - 1, i < 0 ? 0 : i + delta))]);
}
function nextUnvoted() {
  const live = S.order.map((id) => S.nodes.get(id)).filter((n) => !myVote(n) && n.state !== "removed-by-ancestor");
  const after = live.find((n) => S.order.indexOf(n.id) > S.order.indexOf(S.selected)) || live[0];
  if (!after) return toast("you have voted on every live node");
  select(after.id);
}
function vote(v) {
  const n = S.nodes.get(S.selected); if (!n) return;
  post("/api/vote", { target: n.id, vote: v, note: $("#note") ? $("#note").value : "" }).then((s) => s && (load(s), toast(v === "clear" ? "vote withdrawn" : `voted ${v}`)));
}
document.addEventListener("keydown", (e) => {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName);
  if (e.key === "Escape" && typing) return e.target.blur();
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  const key = e.key.toLowerCase(), act = {
    k: () => vote("keep"), r: () => vote("remove"), u: () => vote("clear"), n: nextUnvoted,
    arrowdown: () => move(1), j: () => move(1), arrowup: () => move(-1),
    arrowright: () => S.selected && (S.open.add(S.selected), render()), arrowleft: () => S.selected && (S.open.delete(S.selected), render()),
    e: () => $("#note") && $("#note").focus(), "/": () => $("#search").focus(),
  }[key];
  if (act) { e.preventDefault(); act(); }
});
function renderSummary() {
  const s = S.summary, named = (ids) => el("ul", {}, ...ids.slice(0, 200).map((id) => el("li", {}, pathOf(S.nodes.get(id)))));
  const table = (obj, head) => el("table", {}, el("tr", {}, el("th", {}, head), el("th", {}, "kept disciplines")),
    ...Object.entries(obj).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, v))));
  $("#view-summary").replaceChildren(el("h2", {}, `${s.kept_disciplines} disciplines kept by the current majority`),
    el("div", { class: "cols" }, el("div", {}, el("h3", {}, "Per field"), table(s.per_field, "field")),
      el("div", {}, el("h3", {}, "Per GLAN-Test group"), table(s.per_group, "group")),
      el("div", {}, el("h3", {}, `Ties (${s.ties.length})`), named(s.ties), el("h3", {}, `Pending proposals (${s.pending.length})`), named(s.pending),
        el("h3", {}, `No vote yet (${s.no_votes.length})`), named(s.no_votes))));
}
async function renderActivity() {
  const res = await fetch("/api/activity"); if (!res.ok) return;
  const { events } = await res.json();
  const name = (id) => (S.nodes.get(id) ? pathOf(S.nodes.get(id)) : id || "");
  $("#view-activity").replaceChildren(el("h2", {}, "Activity (newest first)"), el("table", {},
    el("tr", {}, el("th", {}, "when"), el("th", {}, "who"), el("th", {}, "what"), el("th", {}, "node"), el("th", {}, "note")),
    ...events.map((ev) => el("tr", {}, el("td", {}, new Date(ev.at * 1000).toLocaleString()), el("td", {}, ev.reviewer), el("td", {}, ev.kind), el("td", {}, name(ev.target)), el("td", {}, ev.detail)))));
}
document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll(".tab").forEach((x) => x.classList.toggle("active", x === b));
  document.querySelectorAll(".view").forEach((v) => v.classList.toggle("hidden", v.id !== `view-${b.dataset.view}`));
  if (b.dataset.view === "summary") renderSummary();
  if (b.dataset.view === "activity") renderActivity();
}));
$("#search").addEventListener("input", render);
$("#filter").addEventListener("change", render);
$("#expand-all").addEventListener("click", () => { S.order.forEach((id) => S.open.add(id)); render(); });
$("#collapse-all").addEventListener("click", () => { S.open.clear(); render(); });
function askName() { if (LINKS) return; $("#name-input").value = S.me || ""; $("#name-dialog").showModal(); }
if ($("#change-name")) $("#change-name").addEventListener("click", askName);
$("#name-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await post("/api/name", { name: $("#name-input").value });
  if (r) { S.me = r.name; $("#me").textContent = r.name; $("#name-dialog").close(); render(); }
});
refresh().then(() => { if (!S.me) askName(); });
function typingInDetail() { const a = document.activeElement; return a && a.tagName === "INPUT" && a.closest("#detail"); }
setInterval(() => { if (!document.hidden && !typingInDetail()) refresh(); }, 4000);  // others' votes appear without reloading
