// The inspectors' page: log in, filter and page through the county's patches, see them on the
// period composites (before/after with a swipe), open a patch's card, change its status, add
// evidence. Every value from the server is put in the page as text, never as markup.
"use strict";

const state = {
  csrf: null,
  options: null,
  page: 1,
  pages: 1,
  selected: null,
  map: null,
  before: null,
  after: null,
  patches: null,
};

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API; a state change carries the CSRF token. 401 shows the login form. */
async function api(method, url, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") init.headers["X-CSRF-Token"] = state.csrf || "";
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(url, init);
  const type = r.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await r.json() : null;
  if (r.status === 401 && url !== "/api/login") {
    // A session that ended (idle, logged out elsewhere, account reset) asks to log in
    // again; a first visit just shows the form.
    showLogin(state.csrf ? "会话已结束，请重新登录" : "");
    throw new HttpError(401, "log in first");
  }
  if (!r.ok) {
    const e = new HttpError(r.status, (data && data.error) || r.statusText);
    e.data = data;
    throw e;
  }
  return data;
}

/** Forgets everything the last account saw, so that the next one starts from nothing. */
function resetPage() {
  state.csrf = null;
  state.selected = null;
  state.page = 1;
  $("card").hidden = true;
  $("card-body").replaceChildren();
  $("list-rows").replaceChildren();
  $("list-count").textContent = "";
  $("map-note").textContent = "";
  if (state.patches) state.patches.clearLayers();
}

function showLogin(message) {
  resetPage();
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("login-name").focus();
}

async function logIn(event) {
  event.preventDefault();
  try {
    const answer = await api("POST", "/api/login", {
      name: $("login-name").value,
      password: $("login-password").value,
    });
    state.csrf = answer.csrf;
    $("login-password").value = "";
    await start();
  } catch (e) {
    const d = e.data || {};
    $("login-error").textContent = e.status === 401
      ? `用户名或密码错误（连续失败${d.lock_after_failures}次将锁定${d.lock_minutes}分钟）`
      : e.status === 429 ? "此地址登录失败次数过多，请十分钟后再试" : e.message;
  }
}

async function logOut() {
  try {
    await api("POST", "/api/logout");
  } finally {
    // The next account starts at the list, not at this one's patch.
    history.replaceState(null, "", location.pathname);
    showLogin("已退出");
  }
}

const ROLE_ZH = { admin: "管理员", county: "县级用户", inspector: "核查员", auditor: "审计" };

function typeOf(code) {
  return state.options.types.find((t) => t.code === code) || { name: code, colour: "#52606d" };
}

function fillSelect(select, items, all) {
  const keep = select.value;
  select.replaceChildren(el("option", { value: "" }, all));
  for (const [value, label] of items) select.append(el("option", { value }, label));
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

function fillTownships() {
  const county = $("f-county").value;
  const towns = state.options.townships.filter((t) => !county || t.county === county);
  fillSelect($("f-township"), towns.map((t) => [t.code, t.name || t.code]), "全部乡镇");
}

/** Starts the page for the signed-in account (after login, or on a reload with a session). */
async function start() {
  const options = await api("GET", "/api/options");
  state.options = options;
  state.csrf = options.csrf;
  $("login").hidden = true;
  $("app").hidden = false;
  const a = options.account;
  $("who").textContent = `${a.name} · ${ROLE_ZH[a.role] || a.role}` + (a.county ? ` · ${a.county}` : "");
  fillSelect($("f-county"), options.counties.map((c) => [c.code, c.name ? `${c.name} ${c.code}` : c.code]),
    options.counties.length > 1 ? "全部行政区" : "本行政区");
  fillTownships();
  fillSelect($("f-type"), options.types.map((t) => [t.code, t.name]), "全部类型");
  fillSelect($("f-status"), options.statuses.map((s) => [s.code, s.name]), "全部状态");
  const periods = options.periods.map((p) => p.period);
  fillSelect($("f-period"), periods.map((p) => [p, p]), "全部期次");
  fillSelect($("before-period"), periods.map((p) => [p, p]), "（无）");
  fillSelect($("after-period"), periods.map((p) => [p, p]), "（无）");
  if (periods.length) {
    $("after-period").value = periods[periods.length - 1];
    $("before-period").value = periods[Math.max(0, periods.length - 2)];
  }
  $("returns-form").hidden = !options.imports_returns;
  $("returns-message").replaceChildren();
  startMap();
  setPeriods();
  state.page = 1;
  state.fitted = false;
  await refresh();
  await route();
}

function query(extra) {
  const q = new URLSearchParams();
  for (const name of ["county", "township", "type", "status", "period"]) {
    const v = $(`f-${name}`).value;
    if (v) q.set(name, v);
  }
  for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
  return q.toString();
}

async function refresh() {
  $("xlsx").href = `/api/list.xlsx?${query()}`;
  await Promise.all([loadList(), loadPatches()]);
}

/** Counts requests of one kind: an answer that arrives after a newer request's is dropped. */
const latest = { list: 0, patches: 0, card: 0 };

async function loadList() {
  const asked = ++latest.list;
  const data = await api("GET", `/api/list?${query({ page: state.page })}`);
  if (asked !== latest.list) return;
  // A move can empty the last page: show the new last one.
  const last = Math.max(1, Math.ceil(data.total / data.per_page));
  if (state.page > last) {
    state.page = last;
    return loadList();
  }
  // At the start, the map shows all the patches the account may see.
  if (!state.fitted && data.bounds) {
    const [w, s, e, n] = data.bounds;
    state.fitted = true;
    state.map.fitBounds([[s, w], [n, e]], { padding: [30, 30], maxZoom: 16 });
  }
  state.pages = Math.max(1, Math.ceil(data.total / data.per_page));
  $("list-count").textContent = `共 ${data.total} 个图斑`;
  $("page-of").textContent = `第 ${data.page} / ${state.pages} 页`;
  $("prev").disabled = data.page <= 1;
  $("next").disabled = data.page >= state.pages;
  $("list-rows").replaceChildren(
    ...data.rows.map((p) =>
      el("tr", { "data-tbbh": p.tbbh, class: p.tbbh === state.selected ? "selected" : null, onclick: () => openPatch(p.tbbh, true) },
        el("td", {}, p.tbbh),
        el("td", {}, p.township_name || "—"),
        el("td", {}, p.type_zh),
        el("td", {}, p.status_zh),
        el("td", {}, p.area_mu.toFixed(2)))));
}

// ---- map ----------------------------------------------------------------------------------

function tileLayer(period, pane) {
  const info = state.options.periods.find((p) => p.period === period);
  if (!info) return null;
  const opts = { pane, maxZoom: 19, tileSize: 256, attribution: "gengbao 合成影像" };
  if (info.bounds) {
    const [w, s, e, n] = info.bounds;
    opts.bounds = L.latLngBounds([s, w], [n, e]);
  }
  return L.tileLayer(`/api/tiles/${period}/{z}/{x}/{y}.png`, opts);
}

function styleOf(feature) {
  const p = feature.properties;
  const colour = typeOf(p.type).colour;
  const status = state.options.statuses.find((s) => s.code === p.status);
  const done = status && status.settled;
  const chosen = p.tbbh === state.selected;
  return {
    color: chosen ? "#ffe600" : colour,
    weight: chosen ? 4 : 2,
    dashArray: done ? "5 4" : null,
    fillColor: colour,
    fillOpacity: done ? 0.08 : 0.3,
  };
}

function startMap() {
  if (state.map) return;
  const map = L.map("map", { zoomControl: true, preferCanvas: false });
  state.map = map;
  map.attributionControl.setPrefix("Leaflet");
  map.createPane("before").style.zIndex = 200;
  map.createPane("after").style.zIndex = 210;
  L.control.scale({ imperial: false }).addTo(map);
  const legend = L.control({ position: "bottomright" });
  legend.onAdd = () => {
    const box = el("div", { class: "legend" });
    for (const t of state.options.types) {
      const swatch = el("i");
      swatch.style.borderColor = t.colour;
      swatch.style.background = t.colour + "55";
      box.append(el("div", {}, swatch, `${t.name} ${t.code}`));
    }
    const open = el("i");
    open.style.borderColor = "#52606d";
    const done = el("i", { class: "done" });
    done.style.borderColor = "#52606d";
    const settled = state.options.statuses.filter((s) => s.settled).map((s) => s.name).join("/");
    box.append(el("div", {}, open, "待办"), el("div", {}, done, settled));
    return box;
  };
  legend.addTo(map);
  const line = el("div", { class: "swipe-line" });
  const beforeTag = el("div", { class: "period-tag before" });
  const afterTag = el("div", { class: "period-tag after" });
  map.getContainer().append(line, beforeTag, afterTag);
  state.swipe = { line, beforeTag, afterTag };
  state.patches = L.geoJSON(null, {
    style: styleOf,
    onEachFeature: (f, layer) => {
      layer.on("click", () => openPatch(f.properties.tbbh, false));
      const p = f.properties;
      layer.bindTooltip(() => el("span", {}, `${p.tbbh} ${p.type_zh} ${p.status_zh}`));
    },
  }).addTo(map);
  const all = state.options.periods.filter((p) => p.bounds).map((p) => p.bounds);
  if (all.length) {
    const [w, s, e, n] = all[all.length - 1];
    map.fitBounds([[s, w], [n, e]]);
  } else {
    map.setView([35, 110], 4);
  }
  map.on("move zoom resize", clipAfter);
  map.on("moveend", () => loadPatches().catch(showError));
  $("swipe").addEventListener("input", clipAfter);
}

function setPeriods() {
  const map = state.map;
  for (const layer of [state.before, state.after]) if (layer) map.removeLayer(layer);
  state.before = tileLayer($("before-period").value, "before");
  state.after = tileLayer($("after-period").value, "after");
  for (const layer of [state.before, state.after]) if (layer) layer.addTo(map);
  state.swipe.beforeTag.textContent = `前 ${$("before-period").value || "—"}`;
  state.swipe.afterTag.textContent = `后 ${$("after-period").value || "—"}`;
  clipAfter();
}

/** Shows the after period right of the swipe line and the before period left of it. */
function clipAfter() {
  const map = state.map;
  const size = map.getSize();
  const x = size.x * $("swipe").value / 100;
  const nw = map.containerPointToLayerPoint([0, 0]);
  const se = map.containerPointToLayerPoint(size);
  const left = nw.x + x;
  map.getPane("after").style.clip = `rect(${nw.y}px, ${se.x}px, ${se.y}px, ${left}px)`;
  map.getPane("before").style.clip = `rect(${nw.y}px, ${left}px, ${se.y}px, ${nw.x}px)`;
  state.swipe.line.style.left = `${x}px`;
}

async function loadPatches() {
  if (!state.map) return;
  const b = state.map.getBounds();
  const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(6)).join(",");
  const asked = ++latest.patches;
  const data = await api("GET", `/api/patches?${query({ bbox })}`);
  if (asked !== latest.patches) return;
  state.patches.clearLayers();
  state.patches.addData(data);
  $("map-note").textContent = data.truncated
    ? `视野内 ${data.total} 个图斑，仅显示 ${data.features.length} 个：请放大`
    : `视野内 ${data.total} 个图斑`;
}

// ---- patch card --------------------------------------------------------------------------

function row(label, value) {
  return el("tr", {}, el("td", {}, label), el("td", {}, value === "" || value === null ? "—" : value));
}

async function openPatch(tbbh, fly) {
  if (location.hash !== `#patch/${tbbh}`) {
    history.replaceState(null, "", `#patch/${tbbh}`);
  }
  state.selected = tbbh;
  showCard(true);
  const body = $("card-body");
  body.replaceChildren(el("p", {}, "读取中…"));
  let card;
  const asked = ++latest.card;
  try {
    card = await api("GET", `/api/patches/${encodeURIComponent(tbbh)}`);
    if (asked !== latest.card) return;
  } catch (e) {
    if (e.status === 401 || asked !== latest.card) return;
    body.replaceChildren(
      el("h2", {}, tbbh),
      el("p", { class: "error", id: "card-missing" },
        e.status === 404 ? "未找到该图斑：编号不存在，或不属于本账号可查看的行政区。" : e.message));
    return;
  }
  renderCard(card);
  for (const r of document.querySelectorAll("#list-rows tr")) r.classList.toggle("selected", r.dataset.tbbh === tbbh);
  state.patches.setStyle(styleOf);
  if (fly) {
    const [w, s, e, n] = card.bounds;
    state.map.fitBounds([[s, w], [n, e]], { maxZoom: 16, padding: [40, 40] });
  }
}

function renderCard(card) {
  const p = card.patch;
  const body = $("card-body");
  const attrs = el("table", { class: "attributes" },
    row("状态", el("span", { class: "status-pill", id: "card-status" }, p.status_zh)),
    row("面积", `${p.area_mu.toFixed(2)} 亩（${p.area_m2.toFixed(0)} m²）`),
    ...card.attributes.filter((a) => !["TBBH", "ZT", "TBMJ", "TBMJM"].includes(a.field)).map((a) => row(a.label, a.value)));
  const chip = el("img", { class: "chip", alt: `${p.tbbh} 前后时相影像`, src: `/api/patches/${encodeURIComponent(p.tbbh)}/chip.png` });
  chip.addEventListener("error", () => chip.replaceWith(el("p", { class: "warning" }, "尚无前后时相影像（图斑未下发）")));
  const trail = el("ul", { class: "history" },
    card.history.map((h) => el("li", {}, `${h.at.replace("T", " ").slice(0, 19)} ${h.who}：`,
      `${h.from ? statusName(h.from) : "—"} → ${statusName(h.to)}`, h.note ? `（${h.note}）` : "")));
  const evidence = el("ul", { class: "evidence" },
    card.evidence.length ? card.evidence.map(evidenceItem(p.tbbh)) : [el("li", {}, "暂无")]);
  body.replaceChildren(
    el("h2", { id: "card-title" }, p.tbbh),
    chip,
    attrs,
    el("h3", {}, "状态变更"),
    statusForm(p, card.moves),
    el("h3", {}, "举证材料"),
    evidence,
    evidenceForm(p),
    el("h3", {}, "流转记录"),
    trail);
}

function statusName(code) {
  const s = state.options.statuses.find((x) => x.code === code);
  return s ? s.name : code;
}

function evidenceItem(tbbh) {
  return (f) => {
    const link = el("a", { href: `/api/patches/${encodeURIComponent(tbbh)}/evidence/${f.sha256}`, target: "_blank", rel: "noopener" },
      f.sent_name || `${f.sha256}.${f.kind}`);
    const where = f.distance_m === null || f.distance_m === undefined ? "" : ` 距图斑 ${f.distance_m.toFixed(0)} m`;
    const when = f.taken ? ` 拍摄于 ${f.taken}` : "";
    return el("li", {}, link, ` ${f.who}${where}${when}`,
      f.note ? `（${f.note}）` : "",
      f.warnings.map((w) => el("div", { class: "warning" }, `⚠ ${w}`)));
  };
}

function statusForm(p, moves) {
  if (!moves.length) return el("p", {}, "本账号不能变更此图斑的状态。");
  const select = el("select", { id: "move-to" }, moves.map((m) => el("option", { value: m.code }, m.name)));
  const kinds = el("select", { id: "move-evidence" }, state.options.evidence_kinds.map((k) => el("option", { value: k.code }, k.name)));
  const kindLabel = el("label", {}, "举证类型 ", kinds);
  const note = el("textarea", { id: "move-note", placeholder: "说明" });
  const message = el("p", { id: "move-message", role: "status" });
  const showKinds = () => { kindLabel.hidden = select.value !== "evidence_submitted"; };
  select.addEventListener("change", showKinds);
  showKinds();
  const form = el("form", { id: "move-form" }, el("label", {}, "变更为 ", select), kindLabel, note,
    el("button", { type: "submit", class: "primary", id: "move-submit" }, "提交"), message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { status: select.value, note: note.value, from: p.status };
    if (select.value === "evidence_submitted") body.evidence = kinds.value;
    try {
      await api("POST", `/api/patches/${encodeURIComponent(p.tbbh)}/status`, body);
      await openPatch(p.tbbh, false);
      $("move-message").textContent = "已保存";
      await refresh();
    } catch (e) {
      message.className = "error";
      message.textContent = e.status === 409 ? `未保存：${e.message}` : e.message;
    }
  });
  return form;
}

function evidenceForm(p) {
  const file = el("input", { type: "file", id: "evidence-file", name: "file", accept: "image/jpeg,image/png,application/pdf" });
  const note = el("input", { id: "evidence-note", name: "note", placeholder: "说明（可选）" });
  const message = el("p", { id: "evidence-message", role: "status" });
  const form = el("form", { id: "evidence-form" }, file, note,
    el("button", { type: "submit", id: "evidence-submit" }, "上传照片或批文"), message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) {
      message.textContent = "请选择文件";
      return;
    }
    const data = new FormData();
    data.append("note", note.value);
    data.append("file", file.files[0]);
    try {
      await api("POST", `/api/patches/${encodeURIComponent(p.tbbh)}/evidence`, data);
      await openPatch(p.tbbh, false);
      $("evidence-message").textContent = "已上传";
    } catch (e) {
      message.className = "error";
      message.textContent = e.message;
    }
  });
  return form;
}

/** Shows or hides the card; the map takes the room left. */
function showCard(shown) {
  $("card").hidden = !shown;
  state.map.invalidateSize();
  clipAfter();
}

/** Sends a county's returned list; every row is checked, nothing applied when one is bad. */
async function importReturns(event) {
  event.preventDefault();
  const message = $("returns-message");
  const file = $("returns-file");
  const county = $("f-county").value || (state.options.account.county || "");
  if (!file.files.length || !county) {
    message.className = "error";
    message.textContent = file.files.length ? "请先在上方选择行政区" : "请选择回填表文件";
    return;
  }
  const data = new FormData();
  data.append("file", file.files[0]);
  try {
    const r = await api("POST", `/api/returns?county=${encodeURIComponent(county)}`, data);
    message.className = "";
    message.replaceChildren(`已导入：${r.applied.length} 个图斑状态变更，${r.unchanged} 行无变化`);
    await refresh();
  } catch (e) {
    message.className = "error";
    const bad = (e.data && e.data.bad_rows) || [];
    message.replaceChildren(
      bad.length ? `未导入任何一行：${bad.length} 行有误，请改正后重新导入` : e.message,
      ...bad.slice(0, 20).map((b) => el("div", {}, `第 ${b.row} 行：${b.reason}`)));
  }
}

function showError(e) {
  if (e && e.status !== 401) $("map-note").textContent = e.message;
}

async function route() {
  const m = location.hash.match(/^#patch\/(.+)$/);
  if (m) await openPatch(decodeURIComponent(m[1]), true);
}

function wire() {
  $("login-form").addEventListener("submit", logIn);
  $("returns-form").addEventListener("submit", (event) => importReturns(event).catch(showError));
  $("logout").addEventListener("click", logOut);
  $("filters").addEventListener("change", (event) => {
    if (event.target.id === "f-county") fillTownships();
    state.page = 1;
    refresh().catch(showError);
  });
  $("prev").addEventListener("click", () => { state.page -= 1; loadList().catch(showError); });
  $("next").addEventListener("click", () => { state.page += 1; loadList().catch(showError); });
  $("before-period").addEventListener("change", setPeriods);
  $("after-period").addEventListener("change", setPeriods);
  $("card-close").addEventListener("click", () => {
    showCard(false);
    state.selected = null;
    history.replaceState(null, "", "#");
    state.patches.setStyle(styleOf);
  });
  window.addEventListener("hashchange", () => route().catch(showError));
  start().catch((e) => { if (e.status !== 401) showLogin(e.message); });
}

wire();
