// Shared by the review and admin pages. Text goes into the DOM via textContent only, never HTML.
"use strict";
const $ = (sel) => document.querySelector(sel);
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k instanceof Node ? k : String(k));
  return e;
}
function toast(msg, error = false) {
  const t = $("#toast"); t.textContent = msg; t.className = "show" + (error ? " error" : "");
  clearTimeout(toast.t); toast.t = setTimeout(() => (t.className = ""), 2200);
}
// POST from the page (the header no foreign page can send); on failure: a toast, then post.failed.
async function post(url, data) {
  const res = await fetch(url, { method: "POST", headers: { "X-Glan-Review": "1" }, body: new URLSearchParams(data) });
  const body = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) { toast(body.error || "failed", true); post.failed(res.status, body.error); return null; }
  return body;
}
post.failed = () => {};
