// The live dashboard: asks for the admin key once (kept in sessionStorage, gone with the
// tab), then follows /v1/analytics/stream (Server-Sent Events, one snapshot a second).
"use strict";

const KEY = "marketplace.analytics.key";
const $ = (id) => document.getElementById(id);
const yuan = new Intl.NumberFormat("en-US", { style: "currency", currency: "CNY" });
const fen = (amount) => yuan.format(amount / 100);
let source = null;

function setStatus(text, cls) {
  const el = $("status");
  el.textContent = text;
  el.className = "status " + (cls || "");
}

function askForKey(refused) {
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !refused;
  setStatus("needs the admin key", "down");
  $("key").focus();
}

function drawChart(points) {
  const svg = $("chart");
  const ns = "http://www.w3.org/2000/svg";
  const width = 600, height = 160, gap = 2;
  const max = Math.max(1, ...points.map((p) => p.gmv));
  const bar = width / points.length;
  svg.replaceChildren();
  const base = document.createElementNS(ns, "line");
  base.setAttribute("x1", 0); base.setAttribute("x2", width);
  base.setAttribute("y1", height - 0.5); base.setAttribute("y2", height - 0.5);
  svg.appendChild(base);
  points.forEach((p, i) => {
    const h = Math.round((p.gmv / max) * (height - 4));
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", (i * bar + gap / 2).toFixed(1));
    rect.setAttribute("width", Math.max(bar - gap, 1).toFixed(1));
    rect.setAttribute("y", height - h);
    rect.setAttribute("height", h);
    const title = document.createElementNS(ns, "title");
    title.textContent = p.minute.slice(11, 16) + " UTC  " + fen(p.gmv);
    rect.appendChild(title);
    svg.appendChild(rect);
  });
}

function render(s) {
  $("gmv").textContent = fen(s.gmv);
  $("gmv").dataset.amount = s.gmv;
  $("net-gmv").textContent = fen(s.net_gmv);
  $("orders").textContent = s.orders.toLocaleString("en-US");
  $("ops").textContent = s.orders_per_second.toFixed(1);
  $("success").textContent = s.payment_success_rate === null
    ? "–" : (s.payment_success_rate * 100).toFixed(1) + " %";
  drawChart(s.chart);
  $("top").replaceChildren(...s.top_products.map((p) => {
    const li = document.createElement("li");
    const amount = document.createElement("span");
    amount.className = "gmv";
    amount.textContent = fen(p.gmv);
    li.append(`${p.category || "product"} ${p.product_id.slice(0, 8)} · ${p.units} units`,
              amount);
    return li;
  }));
  $("updated").textContent = s.at.replace("T", " ").slice(0, 19) + " UTC";
}

function connect(key) {
  if (source) source.close();
  $("login").hidden = true;
  setStatus("connecting…");
  source = new EventSource("/v1/analytics/stream?key=" + encodeURIComponent(key));
  let opened = false;
  source.addEventListener("open", () => { opened = true; setStatus("live", "live"); });
  source.addEventListener("snapshot", (e) => {
    $("board").hidden = false;
    render(JSON.parse(e.data));
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED && !opened) {
      // Refused before it ever opened (401): the key is wrong, ask again.
      sessionStorage.removeItem(KEY);
      source = null;
      askForKey(true);
    } else {
      setStatus("reconnecting…", "down"); // the browser retries on its own
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    $("key").value = "";
    connect(key);
  });
  const key = sessionStorage.getItem(KEY);
  if (key) connect(key); else askForKey(false);
});
