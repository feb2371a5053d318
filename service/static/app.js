// Gallery search page: plain JavaScript over the public HTTP API (documented at /docs).
// Every API call carries "Authorization: Bearer <key>" when a key is set; crops are fetched
// with that header and shown through object URLs, since <img src> cannot send headers.
"use strict";

(() => {
  const KEY_STORAGE = "sona.apiKey";
  const $ = (id) => document.getElementById(id);
  const el = {
    keyForm: $("key-form"),
    key: $("api-key"),
    status: $("service-status"),
    statusText: $("service-text"),
    demoBadge: $("demo-badge"),
    drop: $("drop-zone"),
    file: $("file-input"),
    preview: $("query-preview"),
    caption: $("query-caption"),
    form: $("search-form"),
    gallery: $("gallery"),
    cameras: $("cameras"),
    cameraTotal: $("camera-total"),
    camerasAll: $("cameras-all"),
    camerasNone: $("cameras-none"),
    since: $("since"),
    until: $("until"),
    k: $("k"),
    groupBy: $("group-by"),
    searchButton: $("search-button"),
    message: $("message"),
    results: $("results"),
    resultsTitle: $("results-title"),
    resultsMeta: $("results-meta"),
    empty: $("empty"),
    trackPanel: $("track-panel"),
    trackTitle: $("track-title"),
    trackMeta: $("track-meta"),
    trackCrops: $("track-crops"),
    trackSearch: $("track-search"),
    trackClose: $("track-close"),
  };

  const state = {
    key: sessionStorage.getItem(KEY_STORAGE) || "",
    galleries: [], // [{gallery, count, cameras: [{camera_id, count}]}]
    query: null, // {kind: "file", file, url} | {kind: "item", item, url} | {kind: "track", track}
    track: null, // the track shown in the track panel (GET gallery/tracks/{track_id})
    images: new Map(), // item_id -> Promise<object URL | null>
    searchSeq: 0,
  };

  // Times in the browser's zone, which is named: a time without a zone is ambiguous.
  const timeFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    timeZoneName: "short",
  });

  /**
   * Where a crop came from, for going back to the video: "seen in vtest.avi, frame 412,
   * 08:00:41" (the time of day as the camera's clock gave it); null when footage said nothing.
   */
  function provenance(item) {
    if (!item.source && item.frame == null) return null;
    const span = document.createElement("span");
    span.className = "provenance";
    const parts = [`seen in ${item.source || "footage"}`];
    if (item.frame != null) parts.push(`frame ${item.frame}`);
    const clock = /T(\d{2}:\d{2}:\d{2})/.exec(item.timestamp || "");
    if (clock) parts.push(clock[1]);
    span.textContent = parts.join(", ");
    if (item.box) {
      const [x, y, w, h] = item.box;
      span.title = `box x ${x}, y ${y}, ${w}\u00d7${h} pixels in the frame`;
    }
    return span;
  }

  // -- HTTP --------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, title, detail) {
      super(detail || title);
      this.status = status;
      this.title = title;
    }
  }

  function authHeaders() {
    return state.key ? { Authorization: `Bearer ${state.key}` } : {};
  }

  /** Fetch a service path (relative, so a path prefix keeps working); throw ApiError on 4xx/5xx. */
  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, {
        ...options,
        headers: { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) },
      });
    } catch (err) {
      throw new ApiError(0, "Network error", `the service did not answer (${err.message})`);
    }
    if (!response.ok) {
      let title = response.statusText || "Error";
      let detail = `HTTP ${response.status}`;
      try {
        const body = await response.json(); // problem+json: type, title, status, detail
        title = body.title || title;
        detail = body.detail || detail;
      } catch (_) { /* not JSON: keep the status line */ }
      throw new ApiError(response.status, title, detail);
    }
    return response;
  }

  const getJson = async (path, options) => (await api(path, options)).json();

  // -- messages ----------------------------------------------------------------------------

  function showError(err) {
    const status = err.status ? `${err.status} ${err.title}` : err.title || "Error";
    el.message.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = status;
    const detail = document.createElement("span");
    detail.className = "detail";
    detail.textContent = err.message;
    el.message.append(strong, detail);
    if (err.status === 401) {
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = "Enter the API key at the top of the page.";
      el.message.append(hint);
      el.key.setAttribute("aria-invalid", "true");
      el.key.focus();
    }
    el.message.hidden = false;
  }

  function clearError() {
    el.message.hidden = true;
    el.message.replaceChildren();
    el.key.removeAttribute("aria-invalid");
  }

  // -- crops -------------------------------------------------------------------------------

  /** The crop of a gallery item as an object URL (cached); null when it cannot be fetched. */
  function itemImage(itemId) {
    if (!state.images.has(itemId)) {
      const promise = api(`gallery/${encodeURIComponent(itemId)}/image`, {
        headers: { Accept: "image/*" },
      })
        .then((r) => r.blob())
        .then((blob) => URL.createObjectURL(blob))
        .catch(() => {
          state.images.delete(itemId);
          return null;
        });
      state.images.set(itemId, promise);
    }
    return state.images.get(itemId);
  }

  function forgetImages(keep = new Set()) {
    for (const [id, promise] of state.images) {
      if (keep.has(id)) continue;
      state.images.delete(id);
      promise.then((url) => url && URL.revokeObjectURL(url));
    }
  }

  // -- galleries and cameras ---------------------------------------------------------------

  async function loadGalleries() {
    const body = await getJson("gallery");
    state.galleries = body.galleries;
    const previous = el.gallery.value;
    el.gallery.replaceChildren();
    for (const g of state.galleries) {
      const option = document.createElement("option");
      option.value = g.gallery;
      option.textContent = `${g.gallery} — ${g.count} item${g.count === 1 ? "" : "s"}`;
      el.gallery.append(option);
    }
    if (!state.galleries.length) {
      const option = document.createElement("option");
      option.value = "";
      option.textContent = "no galleries yet";
      el.gallery.append(option);
    }
    const names = state.galleries.map((g) => g.gallery);
    el.gallery.value = names.includes(previous) ? previous
      : names.includes("default") ? "default" : names[0] || "";
    renderCameras();
    updateSearchButton();
  }

  function currentGallery() {
    return state.galleries.find((g) => g.gallery === el.gallery.value) || null;
  }

  function renderCameras() {
    const gallery = currentGallery();
    el.cameras.replaceChildren();
    if (!gallery) {
      el.cameraTotal.textContent = "";
      return;
    }
    el.cameraTotal.textContent = `· ${gallery.cameras.length} in ${gallery.gallery}`;
    const most = Math.max(1, ...gallery.cameras.map((c) => c.count));
    for (const camera of gallery.cameras) {
      const li = document.createElement("li");
      li.className = "camera";
      li.dataset.camera = camera.camera_id;
      li.dataset.count = String(camera.count);
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = true;
      box.value = camera.camera_id;
      const name = document.createElement("span");
      name.className = "camera-name";
      name.textContent = camera.camera_id;
      const count = document.createElement("span");
      count.className = "camera-count";
      count.textContent = String(camera.count);
      count.setAttribute("aria-label", `${camera.count} items`);
      const bar = document.createElement("span");
      bar.className = "camera-bar";
      bar.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.style.width = `${(100 * camera.count) / most}%`;
      bar.append(fill);
      label.append(box, name, count, bar);
      li.append(label);
      el.cameras.append(li);
    }
  }

  function checkedCameras() {
    const boxes = [...el.cameras.querySelectorAll("input[type=checkbox]")];
    return { all: boxes.length, checked: boxes.filter((b) => b.checked).map((b) => b.value) };
  }

  // -- search ------------------------------------------------------------------------------

  /** A datetime-local value ("2024-05-01T12:00") as ISO 8601 with the browser's offset. */
  function isoWithOffset(value) {
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) return null;
    const pad = (n) => String(Math.abs(n)).padStart(2, "0");
    const offset = -d.getTimezoneOffset();
    const sign = offset >= 0 ? "+" : "-";
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
      `T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
      `${sign}${pad(Math.trunc(offset / 60))}:${pad(offset % 60)}`
    );
  }

  function searchParams() {
    const params = new URLSearchParams();
    params.set("k", el.k.value);
    if (el.gallery.value) params.set("gallery", el.gallery.value);
    const cams = checkedCameras();
    if (cams.all && cams.checked.length === 0) {
      throw new ApiError(0, "No camera selected", "tick at least one camera to search");
    }
    if (cams.checked.length < cams.all) params.set("cameras", cams.checked.join(","));
    for (const [name, input] of [["since", el.since], ["until", el.until]]) {
      if (!input.value) continue;
      const iso = isoWithOffset(input.value);
      if (!iso) throw new ApiError(0, "Invalid time", `${name} is not a valid date and time`);
      params.set(name, iso);
    }
    if (el.groupBy.checked) params.set("group_by", "identity");
    return params;
  }

  async function runSearch() {
    if (!state.query) return;
    const seq = ++state.searchSeq;
    let body;
    let params;
    el.results.setAttribute("aria-busy", "true");
    document.body.classList.add("busy");
    try {
      params = searchParams();
      if (state.query.kind === "file") {
        const form = new FormData();
        form.append("image", state.query.file, state.query.file.name || "query.jpg");
        body = await getJson(`search?${params}`, { method: "POST", body: form });
      } else if (state.query.kind === "track") {
        params.set("track_id", state.query.track.track_id);
        params.set("gallery", state.query.track.gallery);
        body = await getJson(`search?${params}`);
      } else {
        params.set("item_id", state.query.item.item_id);
        body = await getJson(`search?${params}`);
      }
    } catch (err) {
      if (seq === state.searchSeq) {
        clearResults(); // the old list does not answer this query: leave none under the error
        showError(err);
      }
      return;
    } finally {
      if (seq === state.searchSeq) {
        el.results.setAttribute("aria-busy", "false");
        document.body.classList.remove("busy");
      }
    }
    if (seq !== state.searchSeq) return; // a newer search answered or is on its way
    clearError();
    renderResults(body, params);
  }

  function chip(text, className) {
    const span = document.createElement("span");
    span.className = `chip ${className}`;
    span.textContent = text;
    return span;
  }

  function clearResults() {
    el.results.replaceChildren();
    delete el.results.dataset.params;
    el.resultsTitle.textContent = "Results";
    el.resultsMeta.textContent = "";
    el.empty.hidden = true;
  }

  /** Why a search found nothing, from the counts the service gives with an empty answer. */
  function emptyExplanation(body) {
    const why = body.empty_reason;
    if (!why) return "Nothing in this gallery matches the filters. Widen the cameras or the time window.";
    const removed = Object.entries(why.removed_by || {})
      .filter(([, n]) => n > 0)
      .map(([name, n]) => `${n} by ${name}`);
    return `The gallery holds ${why.gallery_items} item${why.gallery_items === 1 ? "" : "s"}` +
      (removed.length ? `; the filters removed ${removed.join(", ")}.` : ".") +
      " Widen the cameras or the time window.";
  }

  function renderResults(body, params) {
    const keep = new Set(body.results.map((r) => r.item_id));
    if (state.query && state.query.kind === "item") keep.add(state.query.item.item_id);
    for (const item of state.track ? state.track.items : []) keep.add(item.item_id);
    if (state.images.size > 400) forgetImages(keep);

    el.results.replaceChildren();
    el.results.dataset.params = params.toString(); // what this list answers (tests read it)
    const n = body.results.length;
    el.resultsTitle.textContent = n ? `Top ${n}` : "No matches";
    el.resultsMeta.textContent =
      `${n} of k=${body.k} in ${body.gallery} · search took ${body.took_ms.toFixed(1)} ms`;
    el.empty.hidden = n > 0;
    if (!n) el.empty.querySelector("p").textContent = emptyExplanation(body);

    for (const result of body.results) {
      const li = document.createElement("li");
      const card = document.createElement("button");
      card.type = "button";
      card.className = "card";
      card.dataset.itemId = result.item_id;
      card.dataset.rank = String(result.rank);
      const when = new Date(result.timestamp);
      const whenText = Number.isNaN(when.getTime()) ? result.timestamp : timeFormat.format(when);
      const score = result.score.toFixed(3);
      const who = result.identity ? `, identity ${result.identity}` : "";
      card.setAttribute(
        "aria-label",
        `Rank ${result.rank}, score ${score}, camera ${result.camera_id}, ${whenText}${who}. ` +
          "Search from this crop.",
      );
      card.title = "Search from this crop";

      const rank = document.createElement("span");
      rank.className = "rank";
      rank.textContent = `#${result.rank}`;

      const thumb = document.createElement("span");
      thumb.className = "thumb";
      const img = document.createElement("img");
      img.alt = `Crop ranked ${result.rank} from camera ${result.camera_id} at ${whenText}${who}`;
      img.decoding = "async";
      thumb.append(img);
      itemImage(result.item_id).then((url) => {
        if (url) img.src = url;
        else thumb.classList.add("missing");
      });

      const meta = document.createElement("span");
      meta.className = "meta";
      const scoreRow = document.createElement("span");
      scoreRow.className = "score-row";
      const scoreText = document.createElement("span");
      scoreText.className = "score";
      scoreText.title = "cosine similarity";
      scoreText.textContent = score;
      const bar = document.createElement("span");
      bar.className = "score-bar";
      bar.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.style.width = `${Math.max(0, Math.min(1, result.score)) * 100}%`;
      bar.append(fill);
      scoreRow.append(scoreText, bar);

      const camera = document.createElement("span");
      camera.className = "camera-id";
      camera.textContent = result.camera_id;
      const time = document.createElement("time");
      time.className = "time";
      time.dateTime = result.timestamp;
      time.textContent = whenText;
      const chips = document.createElement("span");
      chips.className = "chips";
      if (result.identity) chips.append(chip(`id ${result.identity}`, "identity"));
      if (result.track_id) chips.append(chip(`track ${result.track_id}`, "track"));

      meta.append(scoreRow, camera, time, chips);
      const origin = provenance(result);
      if (origin) meta.append(origin);
      card.append(rank, thumb, meta);
      card.addEventListener("click", () => searchFromItem(result));
      li.append(card);
      if (result.track_id) {
        const open = document.createElement("button");
        open.type = "button";
        open.className = "track-open link";
        open.textContent = "Show its track";
        open.setAttribute("aria-label", `Show track ${result.track_id}: its crops over time`);
        open.addEventListener("click", () => showTrack(result.track_id, body.gallery));
        li.append(open);
      }
      el.results.append(li);
    }
  }

  // -- queries -----------------------------------------------------------------------------

  function setPreview(url, alt) {
    el.preview.removeAttribute("src");
    if (url) {
      el.preview.src = url;
      el.preview.alt = alt;
      el.preview.hidden = false;
      el.drop.classList.add("has-query");
    } else {
      el.preview.hidden = true;
      el.drop.classList.remove("has-query");
    }
  }

  function setCaption(title, detail, itemId = null) {
    const strong = document.createElement("strong");
    strong.textContent = title;
    const span = document.createElement("span");
    span.textContent = detail;
    el.caption.replaceChildren(strong, span);
    if (itemId) {
      const code = document.createElement("code");
      code.textContent = itemId;
      code.title = `item_id ${itemId}`;
      el.caption.append(code);
    }
  }

  function replaceQuery(query) {
    if (state.query && state.query.kind === "file") URL.revokeObjectURL(state.query.url);
    state.query = query;
    updateSearchButton();
  }

  function searchFromFile(file) {
    if (!file) return;
    const url = URL.createObjectURL(file);
    replaceQuery({ kind: "file", file, url });
    setPreview(url, `Query crop ${file.name || "from the clipboard"}`);
    setCaption("Uploaded crop", file.name || "pasted image");
    runSearch();
  }

  async function searchFromItem(result) {
    replaceQuery({ kind: "item", item: result, url: null });
    const bits = [result.camera_id, timeFormat.format(new Date(result.timestamp))];
    if (result.identity) bits.push(`id ${result.identity}`);
    setCaption(`Gallery crop (was #${result.rank})`, bits.join(" · "), result.item_id);
    setPreview(null);
    const search = runSearch();
    const url = await itemImage(result.item_id);
    if (state.query && state.query.item === result) {
      setPreview(url, `Query: gallery crop from camera ${result.camera_id}`);
    }
    await search;
    el.drop.scrollIntoView({ block: "nearest" });
  }

  // -- tracks ------------------------------------------------------------------------------

  function spanText(track) {
    const first = timeFormat.format(new Date(track.first_seen));
    const last = timeFormat.format(new Date(track.last_seen));
    return first === last ? first : `${first} – ${last}`;
  }

  /** The track panel: a track's crops oldest first, with their times. */
  async function showTrack(trackId, gallery) {
    let track;
    try {
      const query = new URLSearchParams({ gallery });
      track = await getJson(`gallery/tracks/${encodeURIComponent(trackId)}?${query}`);
    } catch (err) {
      showError(err);
      return;
    }
    state.track = track;
    el.trackTitle.textContent = `Track ${track.track_id}`;
    el.trackMeta.textContent =
      `${track.cameras.join(", ")} · ${spanText(track)} · ${track.count} crop` +
      `${track.count === 1 ? "" : "s"}`;
    el.trackCrops.replaceChildren();
    for (const item of track.items) {
      const li = document.createElement("li");
      li.dataset.itemId = item.item_id;
      const img = document.createElement("img");
      const when = timeFormat.format(new Date(item.timestamp));
      img.alt = `Crop of track ${track.track_id} at ${when}`;
      itemImage(item.item_id).then((url) => { if (url) img.src = url; });
      const time = document.createElement("time");
      time.dateTime = item.timestamp;
      time.textContent = when;
      li.append(img, time);
      const origin = provenance(item);
      if (origin) li.append(origin);
      el.trackCrops.append(li);
    }
    el.trackPanel.hidden = false;
    el.trackPanel.scrollIntoView({ block: "nearest" });
  }

  /** Search with the whole track: the service averages its crops' embeddings. */
  async function searchFromTrack(track) {
    replaceQuery({ kind: "track", track });
    const code = document.createElement("code");
    setCaption(`Whole track (${track.count} crops)`, `${track.camera_id} · ${spanText(track)}`);
    code.textContent = track.track_id;
    el.caption.append(code);
    setPreview(null);
    const search = runSearch();
    const url = track.items.length ? await itemImage(track.items[0].item_id) : null;
    if (state.query && state.query.track === track && url) {
      setPreview(url, `Query: track ${track.track_id}`);
    }
    await search;
  }

  function updateSearchButton() {
    el.searchButton.disabled = !state.query || !el.gallery.value;
  }

  // -- service status and key --------------------------------------------------------------

  async function loadStatus() {
    try {
      const response = await fetch("readyz", { headers: { Accept: "application/json" } });
      const body = await response.json();
      if (response.ok) {
        // the badge stays whole; only the model name gives way on a narrow bar
        el.statusText.textContent = `${body.device} · ${body.model}`;
        el.status.title = `${body.model} on ${body.device}${body.demo ? " (demo model)" : ""}`;
        el.demoBadge.hidden = !body.demo;
        el.status.className = "service-status ok";
      } else {
        // starting (the demo being built): say what and how far, and look again shortly
        const p = body.progress;
        let text = "starting…";
        if (p) {
          text = `preparing: ${p.stage}`;
          if (p.fraction !== null && p.fraction !== undefined) {
            text += ` ${Math.round(p.fraction * 100)}%`;
          }
          if (p.stage_eta_s !== null && p.stage_eta_s !== undefined) {
            text += ` · about ${Math.round(p.stage_eta_s)} s left`;
          }
        }
        el.statusText.textContent = text;
        el.status.title = body.detail || text;
        el.status.className = "service-status";
        state.starting = true;
        setTimeout(loadStatus, 2000);
        return;
      }
      if (state.starting) { // it just became ready: the demo gallery follows within seconds
        state.starting = false;
        refreshUntilGalleries(10);
      }
    } catch (_) {
      el.statusText.textContent = "unreachable";
      el.status.className = "service-status bad";
    }
  }

  async function refresh() {
    try {
      await loadGalleries();
      clearError();
    } catch (err) {
      showError(err);
    }
  }

  async function refreshUntilGalleries(tries) {
    await refresh();
    if (!state.galleries.length && tries > 1) {
      setTimeout(() => refreshUntilGalleries(tries - 1), 2000);
    }
  }

  // -- wiring ------------------------------------------------------------------------------

  el.key.value = state.key;
  el.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = el.key.value.trim();
    if (state.key) sessionStorage.setItem(KEY_STORAGE, state.key);
    else sessionStorage.removeItem(KEY_STORAGE);
    forgetImages();
    refresh();
  });

  // A file the browser cannot show is no crop either: no broken-image icon, say so instead.
  el.preview.addEventListener("error", () => {
    if (!el.preview.getAttribute("src")) return;
    setPreview(null);
    setCaption("Not an image", "the browser cannot show this file");
  });

  el.file.addEventListener("change", () => {
    searchFromFile(el.file.files[0]);
    el.file.value = ""; // choosing the same file again searches again
  });
  el.drop.addEventListener("click", (event) => {
    if (event.target.closest("label, input")) return;
    el.file.click();
  });
  for (const type of ["dragenter", "dragover"]) {
    el.drop.addEventListener(type, (event) => {
      event.preventDefault();
      el.drop.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    el.drop.addEventListener(type, () => el.drop.classList.remove("dragging"));
  }
  el.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = [...(event.dataTransfer?.files || [])][0];
    if (file) searchFromFile(file);
  });
  document.addEventListener("paste", (event) => {
    if (event.target instanceof HTMLInputElement) return;
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) searchFromFile(file);
  });

  el.trackSearch.addEventListener("click", () => state.track && searchFromTrack(state.track));
  el.trackClose.addEventListener("click", () => {
    el.trackPanel.hidden = true;
    state.track = null;
  });

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch();
  });
  let timer = null;
  const searchSoon = () => {
    clearTimeout(timer);
    timer = setTimeout(runSearch, 250);
  };
  el.gallery.addEventListener("change", () => {
    renderCameras();
    updateSearchButton();
    searchSoon();
  });
  el.cameras.addEventListener("change", searchSoon);
  for (const input of [el.since, el.until, el.k, el.groupBy]) {
    input.addEventListener("change", searchSoon);
  }
  el.camerasAll.addEventListener("click", () => {
    el.cameras.querySelectorAll("input").forEach((b) => { b.checked = true; });
    searchSoon();
  });
  el.camerasNone.addEventListener("click", () => {
    el.cameras.querySelectorAll("input").forEach((b) => { b.checked = false; });
  });

  loadStatus();
  refresh();
})();
