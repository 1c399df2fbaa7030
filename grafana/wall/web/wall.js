// The command-center wall. Signs in from its link (/wall#token=pt_...: the fragment never reaches
// a server; the token is kept in localStorage and taken out of the address bar), reads
// api/v1/wall every `refresh_seconds`, and keeps the last data on screen, under a banner saying
// since when, while Pantau is away (retrying with backoff). A new page version reloads the page.
"use strict";

const VERSION = document.querySelector('meta[name="wall-version"]').content;
const TOKEN_KEY = "pantau-wall-token";
const RELOAD_KEY = "pantau-wall-reloaded";
const TZ = "Asia/Jakarta";
const LIMIT = 50;
const FETCH_TIMEOUT_MS = 10000;

const STATE_WORDS = {
  area: "Gangguan wilayah", down: "Mati", late: "Terlambat", up: "Normal",
  unknown: "Belum ada data", empty: "Tanpa perangkat", paused: "Pemeliharaan",
};
const SHORT_WORDS = { area: "Wilayah", unknown: "Tanpa data", empty: "Kosong" };
const PICTURE_WORDS = {
  frozen: "Beku", black: "Hitam", covered: "Tertutup", blurred: "Buram", offline: "Luring",
};

const $ = (id) => document.getElementById(id);
const hhmm = new Intl.DateTimeFormat("id-ID", { timeZone: TZ, hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const hhmmss = new Intl.DateTimeFormat("id-ID", { timeZone: TZ, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
const dayFmt = new Intl.DateTimeFormat("id-ID", { timeZone: TZ, weekday: "long", day: "numeric", month: "long", year: "numeric" });
const shortDay = new Intl.DateTimeFormat("id-ID", { timeZone: TZ, day: "numeric", month: "short" });
const isoDay = new Intl.DateTimeFormat("en-CA", { timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit" });
const number = new Intl.NumberFormat("id-ID");

let token = localStorage.getItem(TOKEN_KEY) || "";
let refreshMs = 15000;
let clockOffset = 0;        // server clock minus this machine's, from the last answer
let failures = 0;
let lostSince = null;       // when the server (or its data) went away, this machine's clock
let lostWhy = "";
let retryAt = 0;
let lastOk = null;          // the server's time of the data on screen
let timer = null;
let stopped = false;
let renders = 0;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function now() { return new Date(Date.now() + clockOffset); }

function time(iso) { return hhmm.format(new Date(iso)); }

// "14.03" today, "kemarin 14.03", or "28 Nov 14.03".
function since(iso) {
  const t = new Date(iso);
  const today = isoDay.format(now());
  const yesterday = isoDay.format(new Date(now().getTime() - 86400000));
  const day = isoDay.format(t);
  if (day === today) return hhmm.format(t);
  if (day === yesterday) return "kemarin " + hhmm.format(t);
  return shortDay.format(t) + " " + hhmm.format(t);
}

// As the CLI says durations: 45 dtk, 12 m, 2 j 15 m, 3 h 4 j.
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " dtk";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " m";
  const h = Math.floor(m / 60);
  if (h < 24) return h + " j " + (m % 60) + " m";
  return Math.floor(h / 24) + " h " + (h % 24) + " j";
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  if (n < 1024) return number.format(n) + " B";
  if (n < 1048576) return number.format(Math.round(n / 1024)) + " KB";
  return number.format(Math.round(n / 1048576)) + " MB";
}

// -- sign-in -------------------------------------------------------------------------------------

function notice(title, html) {
  $("notice-title").textContent = title;
  $("notice-text").innerHTML = html;  // our own fixed text only, never data
  $("notice").hidden = false;
}

function takeTokenFromLink() {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromLink) {
    token = fromLink;
    localStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function revoked() {
  stopped = true;
  clearTimeout(timer);
  localStorage.removeItem(TOKEN_KEY);
  token = "";
  for (const id of ["tiles", "outage-list", "flood-list", "camera-grid", "pipeline-grid", "totals"]) {
    $(id).replaceChildren();
  }
  document.querySelector("#pillar-table tbody").replaceChildren();
  $("banner").hidden = true;
  $("stage").classList.remove("stale");
  notice("Tautan masuk dinding ini tidak berlaku lagi",
    "Tokennya dicabut atau salah, jadi dinding ini tidak menampilkan data. Minta tautan baru ke " +
    "admin: <code>pantau token create --role operator --name \"Dinding\" --wall</code>, lalu " +
    "buka tautan itu sekali di komputer dinding ini.");
}

// -- fetching --------------------------------------------------------------------------------------

function schedule(ms) {
  clearTimeout(timer);
  if (!stopped) timer = setTimeout(tick, ms);
}

function backoff() {
  const cap = Math.min(60000, Math.max(10000, 4 * refreshMs));
  const base = Math.min(cap, 1000 * 2 ** Math.min(failures - 1, 10));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

async function tick() {
  const abort = new AbortController();
  const limit = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  let answer;
  try {
    answer = await fetch("api/v1/wall?limit=" + LIMIT, {
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      cache: "no-store",
      signal: abort.signal,
    });
  } catch (err) {
    clearTimeout(limit);
    return lost("network");
  }
  clearTimeout(limit);
  if (answer.status === 401) return revoked();
  if (!answer.ok) return lost(answer.status === 503 ? "database" : "http " + answer.status);
  let data;
  try {
    data = await answer.json();
  } catch (err) {
    return lost("network");
  }
  if (data.version !== VERSION && reloadOnce()) return;
  found(data);
}

function reloadOnce() {
  // A page from before an upgrade reloads; at most once a minute, so a proxy serving a stale
  // page cannot make it reload in a loop.
  const last = Number(sessionStorage.getItem(RELOAD_KEY) || 0);
  if (Date.now() - last < 60000) return false;
  sessionStorage.setItem(RELOAD_KEY, String(Date.now()));
  location.reload();
  return true;
}

function lost(why) {
  failures += 1;
  if (lostSince === null) lostSince = Date.now();
  lostWhy = why;
  const wait = backoff();
  retryAt = Date.now() + wait;
  showBanner();
  schedule(wait);
}

function found(data) {
  failures = 0;
  lostSince = null;
  refreshMs = Math.max(2000, data.refresh_seconds * 1000);
  clockOffset = new Date(data.generated_at).getTime() - Date.now();
  lastOk = data.generated_at;
  $("banner").hidden = true;
  $("stage").classList.remove("stale");
  render(data);
  schedule(refreshMs);
}

function showBanner() {
  if (lostSince === null) return;
  const banner = $("banner");
  const what = lostWhy === "database"
    ? "DATA TIDAK TERSEDIA" : "KONEKSI TERPUTUS";
  const detail = lostWhy === "database"
    ? "basis data Pantau tidak terjangkau" : "Pantau tidak menjawab";
  const left = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
  const lines = el("div");
  lines.append(
    el("div", null, detail + (lastOk ? " · data terakhir " + hhmmss.format(new Date(lastOk)) + " WIB" : "")),
    el("div", null, "mencoba lagi dalam " + left + " dtk"),
  );
  banner.replaceChildren(
    el("b", null, what + " sejak " + hhmm.format(new Date(lostSince + clockOffset)) + " WIB"),
    lines,
  );
  banner.hidden = false;
  $("stage").classList.add("stale");
}

// -- rendering ---------------------------------------------------------------------------------------

function render(data) {
  document.title = "Dinding Komando · " + data.title;
  $("title").textContent = data.title;
  renderTotals(data.totals);
  renderTiles(data.kecamatan);
  renderOutages(data.outages, data.alarms);
  renderPillars(data.pillars);
  renderFlood(data.flood);
  renderCameras(data.cameras, data.generated_at);
  renderPipeline(data.pipeline, data.generated_at);
  $("updated").textContent = "diperbarui " + hhmmss.format(new Date(data.generated_at)) + " WIB";
  renders += 1;
  document.body.dataset.renders = String(renders);
}

function renderTotals(t) {
  const cells = [
    ["down", t.down, "Mati"],
    ["late", t.late, "Terlambat"],
    ["up", t.up, "Normal"],
    ["area", t.area_outages, "Gangguan wilayah"],
    ["alarm", t.alarms, "Alarm nilai"],
    ["all", t.total, "Perangkat"],
  ];
  $("totals").replaceChildren(...cells.map(([cls, n, word]) => {
    const cell = el("div", "total " + cls + (n > 0 ? " hot" : ""));
    cell.dataset.state = cls;
    cell.append(el("div", "num", number.format(n)), el("div", "word", word));
    return cell;
  }));
}

function renderTiles(rows) {
  const grid = $("tiles");
  const title = el("div", "maptitle");
  title.append("Status kecamatan", el("div", "muted", "mati / jumlah perangkat"));
  const north = el("div", "north");
  north.append(el("b", null, "↑"), "Utara");
  const legend = el("div", "legend");
  for (const state of ["area", "down", "late", "up", "unknown", "empty"]) {
    const row = el("div");
    const swatch = el("i", "tile " + state);
    row.append(swatch, STATE_WORDS[state]);
    legend.append(row);
  }
  const tiles = rows.map((k) => {
    const tile = el("div", "tile " + k.state);
    tile.dataset.kecamatan = k.kecamatan;
    tile.dataset.state = k.state;
    tile.style.gridRow = String(k.row + 1);
    tile.style.gridColumn = String(k.column + 1);
    tile.append(el("div", "name", k.label));
    if (k.total > 0) {
      const count = el("div", "num");
      count.append(String(k.down), el("small", null, "/" + k.total));
      tile.append(count);
    }
    tile.append(el("div", "word", k.state_label));
    tile.title = k.kecamatan_name;
    return tile;
  });
  grid.replaceChildren(title, north, legend, ...tiles);
  // A long name and a long word do not both fit a tile: the word's short form then.
  for (const tile of tiles) {
    const short = SHORT_WORDS[tile.dataset.state];
    const over = tile.scrollHeight > tile.clientHeight + 1 || tile.scrollWidth > tile.clientWidth + 1;
    if (short && over) {
      tile.querySelector(".word").textContent = short;
    }
  }
}

// Adds items while they fit, then the line `more(shown)` says of the rest (none if empty).
function fill(list, items, make, more) {
  list.replaceChildren();
  const overflows = () => list.scrollHeight > list.clientHeight;
  const nodes = [];
  for (const item of items) {
    const node = make(item);
    list.append(node);
    if (overflows()) { node.remove(); break; }
    nodes.push(node);
  }
  let shown = nodes.length;
  if (more(shown)) {
    const line = el(list.tagName === "OL" ? "li" : "div", "more", more(shown));
    list.append(line);
    while (overflows() && shown > 0) {
      shown -= 1;
      nodes[shown].remove();
      line.textContent = more(shown);
    }
  }
  return shown;
}

function renderOutages(outages, alarms) {
  $("outage-count").textContent =
    [outages.total ? "· " + outages.total : "", alarms.total ? "· " + alarms.total + " alarm" : ""]
      .filter(Boolean).join(" ");
  const list = $("outage-list");
  const items = [
    ...outages.items.map((o) => ({ kind: "outage", o })),
    ...alarms.items.map((a) => ({ kind: "alarm", a })),
  ];
  if (items.length === 0) {
    list.replaceChildren(el("li", "more ok-big", "Tidak ada gangguan. Semua perangkat normal."));
    return;
  }
  // What is not on screen, by kind: "+ 2 gangguan, 5 alarm lainnya".
  const more = (shown) => {
    const outagesShown = Math.min(shown, outages.items.length);
    const rest = [];
    if (outages.total > outagesShown) rest.push(outages.total - outagesShown + " gangguan");
    if (alarms.total > shown - outagesShown) rest.push(alarms.total - (shown - outagesShown) + " alarm");
    return rest.length ? "+ " + rest.join(", ") + " lainnya" : "";
  };
  fill(list, items, (item) => item.kind === "alarm" ? alarmItem(item.a) : outageItem(item.o), more);
}

function outageItem(o) {
  const li = el("li", o.kind === "area" ? "area" : o.severity);
  li.dataset.kind = o.kind;
  const head = el("div", "o-head");
  const who = el("span", "who");
  const when = "sejak " + since(o.since) + " WIB · " + duration(o.duration_seconds);
  if (o.kind === "area") {
    who.append(el("span", "tag", "WILAYAH"), o.kecamatan_name);
    head.append(who);
    li.append(head,
      el("div", "o-line", (o.area_down ?? "?") + " dari " + (o.area_total ?? "?") + " perangkat mati"),
      el("div", "o-line", when));
    return li;
  }
  who.textContent = o.device_name || o.device_id;
  head.append(who, el("span", "sev", o.severity_label));
  li.append(head,
    el("div", "o-line", o.kecamatan_name + " · " + (o.cause_label || o.cause || "mati")),
    el("div", "o-line", when));
  return li;
}

function alarmItem(a) {
  const li = el("li", "alarm " + a.severity);
  li.dataset.kind = "alarm";
  const value = a.value === null ? "" : " " + number.format(a.value) + (a.unit ? " " + a.unit : "");
  const head = el("div", "o-head");
  head.append(el("span", "who", a.device_name), el("span", "sev", a.level || a.severity_label));
  li.append(head, el("div", "o-line", a.kecamatan_name + " · " + a.metric_label + value),
    el("div", "o-line", "alarm sejak " + since(a.since) + " WIB"));
  return li;
}

function renderPillars(rows) {
  const body = document.querySelector("#pillar-table tbody");
  body.replaceChildren(...rows.map((p) => {
    const tr = el("tr");
    tr.dataset.pillar = p.pillar;
    const name = p.pillar_name.replace(/\s+cerdas$/i, "");
    tr.append(el("td", null, name));
    const other = p.paused + p.unknown;
    for (const [cls, n] of [["down", p.down], ["late", p.late], ["up", p.up], ["other", other]]) {
      tr.append(el("td", "num " + cls + (n > 0 ? " hot" : " nil"), number.format(n)));
    }
    return tr;
  }));
}

function levelClass(severity) {
  return severity ? "lv-" + severity : "lv-none";
}

function renderFlood(flood) {
  $("flood-count").textContent = flood.total ? "· " + flood.total + " pos" : "";
  const list = $("flood-list");
  if (flood.total === 0) {
    list.replaceChildren(el("div", "muted", "Belum ada pos tinggi muka air."));
    return;
  }
  fill(list, flood.items, gauge,
    (shown) => flood.total > shown ? "+ " + (flood.total - shown) + " pos lainnya" : "");
}

function gauge(g) {
  const box = el("div", "gauge");
  box.dataset.device = g.device_id;
  const head = el("div", "g-head");
  const name = el("div", "g-name");
  name.append(el("b", null, g.name), " · " + g.kecamatan_name);
  const word = g.level_cm === null ? "Tidak ada data"
    : g.state === "down" ? "Mati" : (g.level || "Normal");
  head.append(name, el("span", "g-level " + levelClass(g.level_cm === null ? null : g.severity), word));
  const body = el("div", "g-body");
  const value = el("div", "g-value");
  const num = el("span", "num", g.level_cm === null ? "–" : number.format(Math.round(g.level_cm)));
  num.append(el("small", null, " cm"));
  value.append(num);
  const top = Math.max(1, ...g.levels.map((l) => l.raise_at));
  const scale = Math.max(top * 1.15, (g.level_cm || 0) * 1.05);
  const gaugeScale = el("div", "g-scale");
  const bar = el("div", "bar");
  const fillBar = el("div", "fill " + levelClass(g.severity));
  fillBar.style.width = Math.min(100, ((g.level_cm || 0) / scale) * 100) + "%";
  bar.append(fillBar);
  const marks = el("div", "marks");
  for (const l of g.levels) {
    const at = (l.raise_at / scale) * 100 + "%";
    const mark = el("div", "mark");
    mark.style.left = at;
    bar.append(mark);
    const label = el("span", null, l.name.replace(/^Siaga\s*/i, "S"));
    label.style.left = at;
    marks.append(label);
  }
  gaugeScale.append(bar, marks);
  body.append(value, gaugeScale);
  box.append(head, body);
  return box;
}

function renderCameras(cameras, generatedAt) {
  $("camera-count").textContent = cameras.total ? "· " + cameras.total : "";
  const grid = $("camera-grid");
  if (cameras.total === 0) {
    grid.replaceChildren(el("div", "muted", "Belum ada kamera."));
    return;
  }
  const existing = new Map([...grid.querySelectorAll(".cam")].map((n) => [n.dataset.device, n]));
  const shown = cameras.items.slice(0, 4);
  grid.replaceChildren(...shown.map((c) => camera(c, existing.get(c.device_id), generatedAt)));
  if (cameras.total > shown.length) {
    $("camera-count").textContent = "· " + shown.length + " dari " + cameras.total;
  }
}

function camera(c, old, generatedAt) {
  const bad = c.picture && c.picture !== "ok";
  const tile = el("div", "cam " + c.state + (bad ? " bad" : ""));
  tile.dataset.device = c.device_id;
  tile.dataset.state = c.state;
  const pic = el("div", "pic");
  // The picture is swapped in only once the new one has loaded: no blank tile between two.
  const img = old ? old.querySelector("img") : el("img");
  img.alt = c.name;
  const src = c.snapshot_path.replace(/^\//, "") + "&t=" + encodeURIComponent(generatedAt);
  const next = new Image();
  next.onload = () => { img.src = next.src; };
  next.src = src;
  if (!old) img.src = src;
  let word = c.state_label;
  if (c.state === "up" && bad) word = PICTURE_WORDS[c.picture] || c.picture;
  pic.append(img, el("div", "badge", word));
  if (c.snapshot_age_seconds !== null && c.state !== "down") {
    pic.append(el("div", "age", duration(c.snapshot_age_seconds)));
  } else if (c.since) {
    pic.append(el("div", "age", "sejak " + since(c.since)));
  }
  tile.append(pic, el("div", "cap", c.name));
  return tile;
}

function renderPipeline(p, generatedAt) {
  const proc = p.process;
  const ageS = p.last_arrival
    ? (new Date(generatedAt).getTime() - new Date(p.last_arrival).getTime()) / 1000 : null;
  const stats = [
    numberStat(ageS === null ? "–" : duration(ageS), "Data masuk", ageS === null || ageS > 300),
    numberStat(number.format(p.readings_5m), "Bacaan 5 m", p.readings_5m === 0),
    numberStat(number.format(p.devices_reporting_5m), "Melapor 5 m", false),
    numberStat(number.format(p.quarantined_2h), "Karantina 2 j", p.quarantined_2h > 0),
    numberStat(number.format(p.alerts_pending), "Notif. antre", p.alerts_pending > 0),
    wordStat(proc.mqtt_connected, "Broker MQTT"),
  ];
  $("pipeline-grid").replaceChildren(...stats);
  const notes = [];
  if (proc.database_up === false) notes.push("basis data putus");
  if (proc.spool_bytes) notes.push("antre di disk " + bytes(proc.spool_bytes));
  if (proc.workers_down.length) notes.push(proc.workers_down.length + " pekerja berhenti");
  const note = $("pipeline-note");
  note.textContent = notes.length ? "· " + notes.join(" · ") : "";
  note.className = "count" + (notes.length ? " bad" : "");
}

function numberStat(value, label, bad) {
  const cell = el("div", "stat" + (bad ? " bad" : ""));
  cell.append(el("div", "num", value), el("div", "label", label));
  return cell;
}

function wordStat(flag, label) {
  const word = flag === null ? "–" : flag ? "Terhubung" : "Terputus";
  const cell = el("div", "stat " + (flag === false ? "bad" : flag ? "good" : ""));
  cell.append(el("div", "word", word), el("div", "label", label));
  return cell;
}

// -- the clock and the stage -------------------------------------------------------------------------

function clock() {
  const t = now();
  $("clock").textContent = hhmm.format(t);
  $("date").textContent = dayFmt.format(t);
  showBanner();
}

function fitStage() {
  const scale = Math.min(innerWidth / 1920, innerHeight / 1080);
  $("stage").style.transform = "scale(" + scale + ")";
}

addEventListener("resize", fitStage);
fitStage();
takeTokenFromLink();
clock();
setInterval(clock, 1000);
if (!token) {
  notice("Dinding ini belum masuk",
    "Buka tautan masuk dinding sekali di komputer ini. Admin membuatnya dengan " +
    "<code>pantau token create --role operator --name \"Dinding\" --wall</code> " +
    "(<code>make run</code> mencetaknya sebagai <code>Wall</code>).");
} else {
  tick();
}
