// The pouw dashboard: polls the node's read-only dashboard RPC and draws the page.
// No libraries, no network access beyond the node that served this file.
"use strict";

const RECENT = 15;       // blocks in the table
const CHART_BLOCKS = 60; // blocks in the work chart
const POLL_MS = 1000;
const SETTLED = new Set(["settled", "paid", "expired", "cancelled", "refunded", "closed"]);

function readToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash);
  if (m) {
    sessionStorage.setItem("pouw-dashboard-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", window.location.pathname);
  }
  return sessionStorage.getItem("pouw-dashboard-token") || "";
}

const token = readToken();
let nextId = 1;
let lastTip = null;

async function rpcBatch(calls) {
  const body = calls.map(([method, params]) => ({ jsonrpc: "2.0", id: nextId++, method, params: params || [] }));
  const resp = await fetch("rpc", {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token },
    body: JSON.stringify(body),
  });
  if (resp.status === 401) throw new Error("unauthorized: open the address in <datadir>/<network>/dashboard.url");
  if (!resp.ok) throw new Error("HTTP " + resp.status);
  const replies = await resp.json();
  const byId = new Map(replies.map((r) => [r.id, r]));
  return body.map((req) => {
    const r = byId.get(req.id);
    return r && !r.error ? r.result : null;
  });
}

function $(id) { return document.getElementById(id); }
function text(id, value) { const el = $(id); if (el) el.textContent = value; }
function short(h, n) { return h ? h.slice(0, n || 12) + "…" : ""; }
function fmt(n) {
  if (n === null || n === undefined) return "–";
  const x = Number(n);
  if (!isFinite(x)) return String(n);
  if (Math.abs(x) >= 1e15) return x.toExponential(2);
  const units = ["", "k", "M", "G", "T"];
  let i = 0, v = x;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (i === 0 ? String(Math.round(v * 100) / 100) : v.toFixed(2)) + units[i];
}
function ago(ts) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}
function workOf(header) { return header && header.difficulty !== undefined ? header.difficulty : null; }

function fillRows(id, rows, empty, cols) {
  const tbody = $(id);
  tbody.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = cols; td.className = "muted"; td.textContent = empty;
    tr.appendChild(td); tbody.appendChild(tr);
    return;
  }
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (typeof c === "object" && c !== null) { td.textContent = c.text; td.className = c.cls || ""; td.title = c.title || ""; }
      else td.textContent = c;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

function setStatus(ok, msg) {
  const el = $("status");
  el.textContent = msg;
  el.className = "status " + (ok ? "ok" : "bad");
}

async function refreshSummary() {
  // Jobs in flight and jobs committed in recent blocks: both cost what is live, never
  // the market's whole history (listjobs "all" reads every job record ever made).
  const [info, peers, pool, poolTxs, mining, live, recent, market] = await rpcBatch([
    ["getblockchaininfo"], ["getpeerinfo"], ["getmempoolinfo"], ["getrawmempool", [true]],
    ["getmininginfo"], ["listjobs", ["unsettled", 40]], ["listjobs", ["recent", 40]],
    ["getmarketinfo"],
  ]);
  if (!info) throw new Error("getblockchaininfo failed");
  text("network", info.chain);
  text("tip-height", String(info.blocks));
  text("tip-hash", info.bestblockhash);
  const pct = info.headers ? Math.min(100, (100 * info.blocks) / info.headers) : 100;
  text("sync-progress", pct.toFixed(1) + "%");
  $("sync-bar").style.width = pct.toFixed(1) + "%";
  text("sync-detail", info.blocks + " / " + info.headers + " headers" + (info.initialblockdownload ? " (initial download)" : ""));
  text("difficulty", fmt(info.difficulty));
  const peerList = peers || [];
  const ready = peerList.filter((p) => p.handshake_complete);
  text("peer-count", String(ready.length));
  text("peer-detail", ready.filter((p) => p.inbound).length + " in, " + ready.filter((p) => !p.inbound).length + " out");
  fillRows("peers", peerList.map((p) => [p.id, { text: p.addr, cls: "mono" }, p.inbound ? "in" : "out",
    p.synced_height, p.pingtime === null ? "–" : Math.round(p.pingtime * 1000) + " ms"]), "no peers", 5);
  if (pool) {
    text("mempool-count", String(pool.size !== undefined ? pool.size : 0));
    text("mempool-detail", fmt(pool.bytes || 0) + "B");
  }
  const txs = poolTxs && typeof poolTxs === "object" ? Object.entries(poolTxs) : [];
  txs.sort((a, b) => (b[1].fee || 0) - (a[1].fee || 0));
  fillRows("mempool", txs.slice(0, 20).map(([txid, t]) => [{ text: short(txid, 16), cls: "mono", title: txid },
    fmt(t.fee), t.vsize !== undefined ? t.vsize : (t.size !== undefined ? t.size : "–")]), "empty", 3);
  if (mining) text("netrate", fmt(mining.networkmultiplyaddsps) + " multiply-adds/s network");
  if (market) {
    text("useful-share", (100 * market.useful_share).toFixed(1) + "%");
    text("market-detail", fmt(market.open_demand_multiply_adds) + " MAC open demand, " +
      market.going_bounty_per_multiply_add.toPrecision(3) + " per MAC going rate");
  }
  const liveJobs = Array.isArray(live) ? live : [];
  const recentJobs = Array.isArray(recent) ? recent : [];
  const row = (j) => [{ text: short(j.job_id || j.id || "", 16), cls: "mono" },
    j.shape ? j.shape.join("×") : (j.m ? [j.m, j.k, j.n].join("×") : "–"), fmt(j.bounty), j.state || j.status || "open"];
  fillRows("jobs-open", liveJobs.map(row), "no open jobs", 4);
  fillRows("jobs-settled", recentJobs.filter((j) => SETTLED.has(j.state || j.status)).map(row), "no settled jobs", 4);
  return info;
}

async function refreshBlocks(info) {
  const tip = info.blocks;
  const first = Math.max(0, tip - CHART_BLOCKS + 1);
  const heights = [];
  for (let h = tip; h >= first; h--) heights.push(h);
  const hashes = await rpcBatch(heights.map((h) => ["getblockhash", [h]]));
  const headers = await rpcBatch(hashes.filter(Boolean).map((h) => ["getblockheader", [h, true]]));
  const good = headers.filter(Boolean);
  fillRows("blocks", good.slice(0, RECENT).map((b) => [b.height, { text: short(b.hash, 12), cls: "mono", title: b.hash },
    ago(b.time), { text: short(b.miner, 16), cls: "mono", title: b.miner }, fmt(workOf(b)), b.ntx]), "no blocks", 6);
  const miners = [...new Set(good.slice(0, RECENT).map((b) => b.miner).filter((m) => m && b_isNotGenesis(good, m)))];
  const contrib = miners.length ? await rpcBatch(miners.map((m) => ["getcontribution", [m]])) : [];
  const board = contrib.filter(Boolean).sort((a, b) => (b.work || 0) - (a.work || 0) || (b.blocks || 0) - (a.blocks || 0));
  fillRows("leaderboard", board.map((c, i) => [i + 1, { text: short(c.address, 20), cls: "mono", title: c.address },
    c.blocks, fmt(c.work), fmt(c.multiply_adds)]), "no miners yet", 5);
  drawChart(good.slice().reverse());
}

function b_isNotGenesis(headers, miner) {
  return headers.some((b) => b.miner === miner && b.height > 0);
}

function drawChart(headers) {
  const box = $("chart");
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  // The viewBox is the box's own pixel size: text is never stretched, and the margins
  // (L, B, T) leave room for the labels.
  const W = Math.max(320, Math.round(box.clientWidth) - 16), H = 220;
  const L = 12, R = 12, T = 28, B = 26;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const pts = headers.filter((b) => b.chainwork).map((b) => ({ t: b.time, w: Number(BigInt("0x" + b.chainwork)) }));
  if (pts.length < 2) {
    const msg = document.createElementNS(NS, "text");
    msg.setAttribute("x", String(W / 2)); msg.setAttribute("y", String(H / 2));
    msg.setAttribute("text-anchor", "middle");
    msg.textContent = "not enough blocks yet";
    svg.appendChild(msg);
    box.replaceChildren(svg);
    return;
  }
  const w0 = pts[0].w, t0 = pts[0].t;
  const tMax = Math.max(1, pts[pts.length - 1].t - t0);
  const wMax = Math.max(1, pts[pts.length - 1].w - w0);
  const x = (t) => L + ((t - t0) / tMax) * (W - L - R);
  const y = (w) => H - B - ((w - w0) / wMax) * (H - T - B);
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("class", "line");
  line.setAttribute("points", pts.map((p) => x(p.t).toFixed(1) + "," + y(p.w).toFixed(1)).join(" "));
  const axes = document.createElementNS(NS, "path");
  axes.setAttribute("class", "axis");
  axes.setAttribute("fill", "none"); // an open path is filled black by default
  axes.setAttribute("d", `M${L},${T} V${H - B} H${W - R}`);
  const label = (tx, xx, yy, anchor) => {
    const el = document.createElementNS(NS, "text");
    el.setAttribute("x", String(xx)); el.setAttribute("y", String(yy));
    el.setAttribute("text-anchor", anchor); el.textContent = tx; return el;
  };
  svg.append(axes, line,
    label("+" + fmt(wMax) + " work", L, T - 8, "start"),
    label(new Date(t0 * 1000).toLocaleTimeString(), L, H - 8, "start"),
    label(new Date((t0 + tMax) * 1000).toLocaleTimeString(), W - R, H - 8, "end"),
    label("cumulative chain work, last " + pts.length + " blocks", W - R, T - 8, "end"));
  box.replaceChildren(svg);
}

let busy = false;
async function tick() {
  if (busy) return;
  busy = true;
  try {
    const info = await refreshSummary();
    if (info.bestblockhash !== lastTip) {
      await refreshBlocks(info);
      lastTip = info.bestblockhash;
    }
    setStatus(true, "live");
    text("updated", new Date().toLocaleTimeString());
  } catch (err) {
    setStatus(false, String(err && err.message ? err.message : err));
  } finally {
    busy = false;
  }
}

if (!token) setStatus(false, "no token: open the address in <datadir>/<network>/dashboard.url");
else { tick(); setInterval(tick, POLL_MS); }
