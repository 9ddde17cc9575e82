// The cluster page: regions, nodes and their states, the guarantee,
// degraded chunks and repair progress, refreshed every two seconds.
"use strict";

const $ = (s) => document.querySelector(s);
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  Object.assign(e, attrs || {});
  e.append(...kids);
  return e;
};

async function refresh() {
  const k = localStorage.getItem("atoll.key");
  const r = await fetch("/v1/cluster", { headers: k ? { Authorization: "Bearer " + k } : {}, cache: "no-store" });
  if (r.status === 403) {
    $("#keyform").hidden = false;
    return;
  }
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).message || r.statusText);
  render(await r.json());
  $("#status").textContent = "Updated " + new Date().toLocaleTimeString();
  $("#status").className = "";
}

function render(c) {
  const rep = c.repair || {};
  $("#summary").replaceChildren(
    el("p", { className: "guarantee " + (c.tolerates_region_loss ? "yes" : "no"), id: "guarantee" },
      c.tolerates_region_loss ? "Every file survives the loss of any one region." : "A region's loss could now lose data — see warnings."),
    el("p", {}, `Coding ${c.k}+${c.m} · ${c.blobs} blobs · leader ${c.leader || "none"}`),
    el("p", { id: "degraded" }, `Degraded chunks: ${c.degraded_chunks}` +
      (rep.running ? ` · repairing ${rep.done}/${rep.total}` + (rep.eta_seconds ? `, about ${Math.ceil(rep.eta_seconds)} s left` : "") : " · no repair running")),
    ...(c.warnings || []).map((w) => el("p", { className: "warning" }, "⚠ " + w)),
  );
  const regions = [...new Set([...(c.regions || []), ...c.nodes.map((n) => n.region)])].sort();
  $("#regions").replaceChildren(...regions.map((r) => {
    const nodes = c.nodes.filter((n) => n.region === r);
    const up = nodes.filter((n) => n.state === "alive").length;
    const rows = nodes.map((n) => el("tr", {},
      el("td", {}, n.id), el("td", { className: n.state }, n.state), el("td", {}, n.placement),
      el("td", {}, n.voter ? "voter" : ""), el("td", {}, n.addr)));
    return el("div", { className: "region" + (up === 0 ? " down" : ""), id: "region-" + r },
      el("h3", {}, `${r} (${up}/${nodes.length} up)`),
      el("table", {}, el("tr", {}, ...["node", "state", "placement", "raft", "address"].map((h) => el("th", {}, h))), ...rows));
  }));
}

$("#keyform").onsubmit = (e) => {
  e.preventDefault();
  localStorage.setItem("atoll.key", $("#accesskey").value.trim() + ":" + $("#secretkey").value.trim());
  $("#keyform").hidden = true;
  refresh();
};

const tick = () => refresh().catch((err) => { $("#status").textContent = "Error: " + err.message; $("#status").className = "error"; });
tick();
setInterval(tick, 2000);
