// The explorer page: the UMAP of all concepts drawn by regl-scatterplot (WebGL), mounted once; the concept card,
// search results and lasso rankings are htmx fragments swapped in beside it. All view state (model, colour, size,
// concept, radius, selection) lives in the URL: controls push history entries and the back button restores them.
import { createRenderer, createScatterplot } from "/static/vendor/regl-scatterplot.js";

// Point payload layout: see backend/explorer.py (24-byte header, then float32 x, y, value per concept).
const MAGIC = "BSPT";
const HEADER_BYTES = 24;
const COLOUR_KEYS = ["delta", "relative_delta", "frequency", "frequency_gen", "minority"];
const NO_VALUE = 255; // colour category of concepts without a value (dead, not attributed); 0..254 carry the scale
// the sequential scale (viridis anchors) is the server's (backend/svg.py SEQUENTIAL), handed over by the page
const VIRIDIS = JSON.parse(document.getElementById("explorer").dataset.sequential);
// delta and relative delta diverge from their neutral middle (0.5, 0): blue suppressed, grey even, orange exaggerated
// (the card's colours), so the blindspots stand out and the middle of the scale reads as "no change"
const DIVERGING = [[43, 74, 203], [116, 143, 252], [134, 142, 150], [252, 146, 87], [217, 72, 15]];
const DIVERGING_KEYS = new Set(["delta", "relative_delta"]);
const SIZE_STEPS = 24;

function scale(anchors, steps) {
  const colours = [];
  for (let i = 0; i < steps; i += 1) {
    const at = (i / (steps - 1)) * (anchors.length - 1);
    const lo = Math.floor(at);
    const hi = Math.min(lo + 1, anchors.length - 1);
    const f = at - lo;
    const rgb = anchors[lo].map((c, k) => Math.round(c + (anchors[hi][k] - c) * f));
    colours.push(`#${rgb.map((c) => c.toString(16).padStart(2, "0")).join("")}`);
  }
  return colours;
}
const pointColours = (colour) => [...scale(DIVERGING_KEYS.has(colour) ? DIVERGING : VIRIDIS, NO_VALUE), "#5c636a"];

export function parsePoints(buffer) {
  const view = new DataView(buffer);
  const magic = String.fromCharCode(...new Uint8Array(buffer, 0, 4));
  if (magic !== MAGIC || view.getUint32(4, true) !== 1) throw new Error("not a version-1 point payload");
  const n = view.getUint32(8, true);
  if (buffer.byteLength !== HEADER_BYTES + 12 * n) throw new Error(`point payload of ${buffer.byteLength} bytes for ${n} points`);
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  const value = new Float32Array(n);
  for (let i = 0, offset = HEADER_BYTES; i < n; i += 1, offset += 12) {
    x[i] = view.getFloat32(offset, true);
    y[i] = view.getFloat32(offset + 4, true);
    value[i] = view.getFloat32(offset + 8, true);
  }
  return { n, colour: COLOUR_KEYS[view.getUint32(12, true)], low: view.getFloat32(16, true), high: view.getFloat32(20, true), x, y, value };
}

// regl-scatterplot's spatial index is a KDBush 4 buffer: an 8-byte header (0xdb, version 1 << 4 | array type,
// uint16 node size, uint32 count), the ids in tree order, padding to 8 bytes, then float64 x, y in that order.
const KDBUSH_NODE_SIZE = 64;
const KDBUSH_FLOAT64 = 8; // index of Float64Array in KDBush's list of array types

function kdbushBuffer(order, x, y) {
  const n = order.length;
  const Ids = n < 65536 ? Uint16Array : Uint32Array;
  const idBytes = n * Ids.BYTES_PER_ELEMENT;
  const pad = (8 - (idBytes % 8)) % 8;
  const buffer = new ArrayBuffer(8 + idBytes + pad + 16 * n);
  new Uint8Array(buffer, 0, 2).set([0xdb, (1 << 4) + KDBUSH_FLOAT64]);
  new Uint16Array(buffer, 2, 1)[0] = KDBUSH_NODE_SIZE;
  new Uint32Array(buffer, 4, 1)[0] = n;
  new Ids(buffer, 8, n).set(order);
  const coords = new Float64Array(buffer, 8 + idBytes + pad, 2 * n);
  for (let i = 0; i < n; i += 1) {
    coords[2 * i] = x[order[i]];
    coords[2 * i + 1] = y[order[i]];
  }
  return buffer;
}

function normalisedLayout(points) {
  // regl-scatterplot draws in [-1, 1]; keep the UMAP's aspect ratio and leave a margin.
  let [minX, maxX, minY, maxY] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < points.n; i += 1) {
    minX = Math.min(minX, points.x[i]); maxX = Math.max(maxX, points.x[i]);
    minY = Math.min(minY, points.y[i]); maxY = Math.max(maxY, points.y[i]);
  }
  const side = Math.max(maxX - minX, maxY - minY) || 1;
  const [cx, cy] = [(minX + maxX) / 2, (minY + maxY) / 2];
  const k = 1.8 / side;
  return { x: Array.from(points.x, (v) => (v - cx) * k), y: Array.from(points.y, (v) => (v - cy) * k) };
}

// A lasso or box selection lives in the URL as its polygon in layout coordinates ("x,y;x,y;..."), at most
// MAX_VERTICES vertices, so a shared link re-opens the same ranking.
const MAX_VERTICES = 48;

function polygonToText(vertices) {
  const step = Math.max(1, Math.ceil(vertices.length / MAX_VERTICES));
  return vertices.filter((_, i) => i % step === 0).map(([x, y]) => `${x.toFixed(4)},${y.toFixed(4)}`).join(";");
}

function polygonFromText(text) {
  if (!text) return null;
  const vertices = text.split(";").map((pair) => pair.split(",").map(Number));
  const valid = vertices.length >= 3 && vertices.length <= MAX_VERTICES * 2
    && vertices.every((v) => v.length === 2 && v.every(Number.isFinite));
  return valid ? vertices : null;
}

function main(root) {
  performance.mark("explorer:start");
  const defaults = JSON.parse(root.dataset.state);
  const nConcepts = Number(root.dataset.nConcepts);
  const plot = document.getElementById("plot");
  const canvas = document.getElementById("scatter");
  const edgesSvg = document.getElementById("edges");
  const hitsSvg = document.getElementById("hits");
  const edgeModel = document.getElementById("edge-model");
  const searchResults = document.getElementById("search-results");
  const thresholds = JSON.parse(root.dataset.thresholds);
  const tooltip = document.getElementById("tooltip");
  const legend = document.getElementById("legend");
  const status = document.getElementById("plot-status");
  const controls = {
    model: document.getElementById("model"),
    colour: document.getElementById("colour"),
    size: document.getElementById("size"),
    radius: document.getElementById("radius"),
    select: document.getElementById("select-mode"),
  };
  const radiusValue = document.getElementById("radius-value");
  const jump = document.getElementById("jump");
  const card = document.getElementById("card");
  const context = document.getElementById("context");
  const neighbourList = document.getElementById("neighbours");
  const neighbourCount = document.getElementById("neighbour-count");
  const selectionBox = document.getElementById("selection");
  const placeholder = card.querySelector(".placeholder")?.outerHTML
    ?? '<p class="muted placeholder">Click a concept on the map, jump to an id or search a label to open its card.</p>';

  const briefs = new Map();
  let layout = null;
  let edges = null;
  let highlighted = [];
  let contextToken = 0;
  let cardToken = 0;

  function readUrl() {
    const params = new URLSearchParams(window.location.search);
    const concept = params.get("concept");
    const radius = Number(params.get("radius") ?? defaults.radius);
    return {
      model: params.get("model") || defaults.model,
      colour: params.get("colour") || defaults.colour,
      size: params.get("size") || defaults.size,
      concept: concept === null || concept === "" ? null : Number(concept),
      radius: Number.isFinite(radius) ? Math.min(Math.max(radius, 0), 1) : defaults.radius,
      select: params.get("select") === "box" ? "box" : "lasso",
      sel: polygonFromText(params.get("sel")),
      debug: params.get("debug") === "1",
    };
  }
  const state = readUrl();

  function urlOf(s) {
    const params = new URLSearchParams({ model: s.model, colour: s.colour, size: s.size, radius: String(s.radius) });
    if (s.concept !== null) params.set("concept", String(s.concept));
    if (s.select === "box") params.set("select", "box");
    if (s.sel) params.set("sel", polygonToText(s.sel));
    if (s.debug) params.set("debug", "1");
    return `${window.location.pathname}?${params}`;
  }

  function syncControls() {
    controls.model.value = state.model;
    controls.colour.value = state.colour;
    controls.size.value = state.size;
    controls.radius.value = String(state.radius);
    controls.select.value = state.select;
    radiusValue.textContent = state.radius.toFixed(2);
  }

  // the point payload is on its way (the page preloads it) while WebGL starts up
  const payloads = new Map();
  function payload(model, colour) {
    const url = `/api/explorer/points.bin?model=${encodeURIComponent(model)}&colour=${encodeURIComponent(colour)}`;
    if (!payloads.has(url)) {
      payloads.set(url, fetch(url).then(async (response) => {
        if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
        return parsePoints(await response.arrayBuffer());
      }));
    }
    return payloads.get(url);
  }
  payload(state.model, state.colour).catch(() => {}); // errors surface where draw() awaits it
  // the order of the points in the scatter's spatial index, sorted by the server (backend/kdindex.py)
  const layoutOrder = fetch("/api/explorer/layout-order.bin").then((r) => (r.ok ? r.arrayBuffer() : null))
    .then((buffer) => (buffer ? new Uint32Array(buffer) : null)).catch(() => null);
  let spatialIndex = null;

  // regl-scatterplot draws into the WebGL canvas of a renderer and copies each frame into the plot's canvas. Its
  // default renderer is as large as the window; one the size of the plot halves the pixels each frame reads back
  // (about 300 ms per frame under software WebGL on a busy 2-core machine, and the first load draws two frames).
  // Its context without multisampling (regl-scatterplot asks for it; the points' edges are smoothed by their own
  // shader): a frame costs less under software WebGL (first load at 32,000 concepts 1.68 -> 1.46 s, median of 8
  // interleaved loads each on the busy machine)
  const rendererCanvas = document.createElement("canvas");
  rendererCanvas.getContext("webgl", { antialias: false, preserveDrawingBuffer: true });
  const renderer = createRenderer({ canvas: rendererCanvas });
  performance.mark("explorer:renderer-created");
  const fitRenderer = () => renderer.resize(Math.max(plot.clientWidth, 1), Math.max(plot.clientHeight, 1));
  fitRenderer();

  const basePointSize = nConcepts <= 2000 ? 9 : nConcepts <= 10000 ? 5 : 3;
  const scatterplot = createScatterplot({
    renderer,
    canvas,
    width: "auto",
    height: "auto",
    backgroundColor: "#14161a",
    pointColor: pointColours(state.colour),
    pointColorActive: "#ffffff",
    pointColorHover: "#ff6b6b",
    colorBy: "valueA",
    pointSize: basePointSize,
    pointSizeSelected: 2,
    pointOutlineWidth: 2,
    opacity: 0.9,
    opacityInactiveScale: 0.55,
    lassoColor: "#4dabf7",
    lassoMinDelay: 10,
    lassoType: state.select === "box" ? "rectangle" : "freeform",
    deselectOnDblClick: false,
    // events run inside the call that causes them, so that the page can tell the lasso it runs itself to restore a
    // selection (restoreSelection) from the user's
    syncEvents: true,
  });
  // ?debug=1: a small read-only view of the scatter, for debugging and for the browser tests (tests/browser): where
  // the scatter draws a concept now, how many points it holds, its spatial index. A plain visit has none of it. Not
  // as data attributes of the page: screen positions change with every pan, zoom and resize, and only the scatter's
  // camera knows them; a test that recomputed them from the layout would re-implement regl-scatterplot's projection
  // and test its own copy.
  if (state.debug) {
    window.blindspot = Object.freeze({
      screenPosition: (concept) => scatterplot.getScreenPosition(concept),
      screenPositions: () => Array.from({ length: nConcepts }, (_, i) => scatterplot.getScreenPosition(i)),
      pointCount: () => scatterplot.get("points").length,
      spatialIndex: () => scatterplot.get("spatialIndex")?.slice(0),
    });
  }
  let drawnScales = { colour: DIVERGING_KEYS.has(state.colour), sized: false }; // what the scatter was created with
  performance.mark("explorer:scatter-created");

  function legendTicks(points) {
    // the blindspot thresholds and the neutral middle of delta; the middle of relative delta; else the ends
    if (points.colour === "delta") return [points.low, thresholds.suppressed_below, 0.5, thresholds.exaggerated_above, points.high];
    if (points.colour === "relative_delta") return [points.low, 0, points.high];
    return [points.low, (points.low + points.high) / 2, points.high];
  }

  function drawLegend(points) {
    const text = controls.colour.selectedOptions[0]?.title ?? points.colour;
    const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Number(v.toPrecision(3)).toString());
    legend.innerHTML = "";
    const title = document.createElement("div");
    title.textContent = text;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.background = `linear-gradient(to right, ${scale(DIVERGING_KEYS.has(points.colour) ? DIVERGING : VIRIDIS, 17).join(", ")})`;
    const ticks = document.createElement("div");
    ticks.className = "ticks";
    const span = points.high > points.low ? points.high - points.low : 1;
    for (const value of legendTicks(points)) {
      const tick = document.createElement("span");
      tick.className = "tick";
      tick.dataset.value = String(value);
      tick.style.left = `${(100 * (value - points.low)) / span}%`;
      tick.textContent = fmt(value);
      ticks.append(tick);
    }
    const missing = document.createElement("div");
    missing.innerHTML = '<span class="nan"></span>no value (dead or not attributed)';
    legend.append(title, bar, ticks, missing);
  }

  async function draw() {
    hideTooltip();
    status.hidden = false;
    status.textContent = `loading ${nConcepts} concepts…`;
    const colourPoints = await payload(state.model, state.colour);
    performance.mark("explorer:points-parsed");
    const sizeSource = state.size === "frequency" ? "frequency" : state.size === "extremity" ? "delta" : null;
    const sizePoints = sizeSource ? await payload(state.model, sizeSource) : null;
    layout ??= normalisedLayout(colourPoints);
    if (spatialIndex === null) {
      const order = await layoutOrder;
      if (order && order.length === layout.x.length) spatialIndex = kdbushBuffer(order, layout.x, layout.y);
    }
    const { n, low, high, value } = colourPoints;
    const span = high > low ? high - low : 1;
    const category = new Array(n);
    const size = new Array(n);
    for (let i = 0; i < n; i += 1) {
      const v = value[i];
      category[i] = Number.isFinite(v) ? Math.min(NO_VALUE - 1, Math.max(0, Math.floor(((v - low) / span) * NO_VALUE))) : NO_VALUE;
      if (sizePoints === null) size[i] = 0.5;
      else {
        const s = sizePoints.value[i];
        const fraction = state.size === "frequency" ? s / (sizePoints.high || 1) : Math.abs(s - 0.5) * 2;
        size[i] = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
      }
    }
    // every set() renders a frame, and a frame costs a read-back of the WebGL canvas: set only what changed
    const scales = { colour: DIVERGING_KEYS.has(colourPoints.colour), sized: sizePoints !== null };
    if (scales.colour !== drawnScales.colour || scales.sized !== drawnScales.sized) {
      scatterplot.set({
        pointColor: pointColours(colourPoints.colour),
        ...(scales.sized
          ? { sizeBy: "valueB", pointSize: Array.from({ length: SIZE_STEPS }, (_, i) => basePointSize * (0.45 + (2.2 * i) / (SIZE_STEPS - 1))) }
          : { sizeBy: null, pointSize: basePointSize }),
      });
      drawnScales = scales;
    }
    performance.mark("explorer:draw-called");
    await scatterplot.draw({ x: layout.x, y: layout.y, valueA: category, valueB: size },
      { zDataType: "categorical", wDataType: "continuous", ...(spatialIndex ? { spatialIndex } : {}) });
    performance.mark("explorer:drawn");
    if (highlighted.length) scatterplot.select(highlighted, { preventEvent: true });
    drawLegend(colourPoints);
    plot.dataset.points = String(scatterplot.get("points").length);
    plot.dataset.view = `${state.model}/${state.colour}/${state.size}`;
    status.hidden = true;
    drawEdges();
    drawHits();
  }

  function line(x1, y1, x2, y2, cls, width) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", "line");
    Object.entries({ x1, y1, x2, y2, class: cls, "stroke-width": width }).forEach(([k, v]) => el.setAttribute(k, v));
    return el;
  }

  function drawEdges() {
    edgesSvg.replaceChildren();
    if (state.concept === null || edges === null || !plot.dataset.points) return;
    const [ax, ay] = scatterplot.getScreenPosition(state.concept);
    for (const side of ["generated", "real"]) { // real on top: dashed, so both show where partners agree
      for (const partner of edges[side]) {
        const [bx, by] = scatterplot.getScreenPosition(partner.concept);
        edgesSvg.append(line(ax, ay, bx, by, side, 1 + 3 * partner.weight));
      }
    }
    const anchor = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    Object.entries({ cx: ax, cy: ay, r: basePointSize + 4, class: "anchor" }).forEach(([k, v]) => anchor.setAttribute(k, v));
    edgesSvg.append(anchor);
    edgesSvg.dataset.edges = String(edges.real.length + edges.generated.length);
  }

  function conceptLink(concept, text, extra) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `/explorer?model=${encodeURIComponent(state.model)}&concept=${concept}`;
    a.dataset.concept = String(concept);
    a.textContent = `#${concept} ${text}`;
    li.append(a);
    if (extra) {
      const span = document.createElement("span");
      span.className = "muted";
      span.textContent = ` ${extra}`;
      li.append(span);
    }
    return li;
  }

  async function loadContext({ zoom = false } = {}) {
    const token = ++contextToken;
    if (state.concept === null) {
      highlighted = [];
      edges = null;
      scatterplot.deselect({ preventEvent: true });
      context.hidden = true;
      drawEdges();
      return;
    }
    // a later call (another concept, the back button) supersedes this one at every await: a stale answer must not
    // draw the edges or move the camera of a concept that is no longer open
    const concept = state.concept;
    const url = `/api/explorer/context?concept=${concept}&model=${encodeURIComponent(state.model)}&radius=${state.radius}`;
    const response = await fetch(url);
    if (!response.ok || token !== contextToken) return;
    const data = await response.json();
    if (token !== contextToken) return;
    edges = data.edges;
    highlighted = [concept, ...data.neighbours.map((n) => n.concept)];
    scatterplot.select(highlighted, { preventEvent: true });
    neighbourList.replaceChildren(...data.neighbours.map((n) => conceptLink(n.concept, n.label, n.distance.toFixed(3))));
    neighbourCount.textContent = `${data.neighbours.length} within ${state.radius.toFixed(2)} of the map`;
    context.hidden = false;
    drawEdges();
    if (zoom) {
      // close enough to see the concept's surroundings, whatever its neighbour count (one point alone would fill the view)
      await scatterplot.zoomToLocation([layout.x[concept], layout.y[concept]], 0.45,
        { transition: true, transitionDuration: 400 });
    }
  }

  async function loadCard() {
    // the card fragment, swapped in only while it is still the open concept's (as loadContext, by a token)
    const token = ++cardToken;
    const concept = state.concept;
    if (concept === null) {
      card.innerHTML = placeholder;
      return;
    }
    const response = await fetch(`/concepts/${concept}?model=${encodeURIComponent(state.model)}`, { headers: { "HX-Request": "true" } });
    const html = await response.text(); // an error answers with its own fragment, which says what went wrong
    if (token !== cardToken) return;
    card.innerHTML = html;
    htmx.process(card);
    card.dataset.concept = String(concept);
  }

  async function openConcept(concept, { push = true, zoom = false } = {}) {
    if (!Number.isInteger(concept) || concept < 0 || concept >= nConcepts) return;
    state.concept = concept;
    if (push) window.history.pushState(null, "", urlOf(state));
    await Promise.all([loadCard(), loadContext({ zoom })]);
  }

  async function openSelection(ids) {
    const response = await fetch("/explorer/selection", {
      method: "POST",
      headers: { "Content-Type": "application/json", "HX-Request": "true" },
      body: JSON.stringify({ ids, model: state.model, order: "asc" }),
    });
    selectionBox.innerHTML = await response.text();
    htmx.process(selectionBox);
    if (highlighted.length) scatterplot.select(highlighted, { preventEvent: true });
  }

  let restoring = false; // true while the page runs the bundle's lasso itself: its events are not the user's

  function restoreSelection() {
    // the selection of the URL: the concepts inside its polygon, found by the bundle's own lasso over its spatial
    // index (the polygon is in layout coordinates, which are the scatter's GL coordinates, hence isGl), and ranked
    // as the user's lasso is
    if (!state.sel || layout === null) {
      selectionBox.innerHTML = "";
      return Promise.resolve();
    }
    restoring = true;
    try {
      scatterplot.lassoSelect(state.sel, { isGl: true });
    } finally {
      restoring = false;
    }
    const ids = scatterplot.get("selectedPoints");
    if (!ids.length) {
      selectionBox.innerHTML = "";
      if (highlighted.length) scatterplot.select(highlighted, { preventEvent: true });
      return Promise.resolve();
    }
    return openSelection(ids.slice(0, 50000));
  }

  function placeTooltip(index) {
    // beside the point, flipped to its left (or above) where the plot's edge would cut it off
    const [x, y] = scatterplot.getScreenPosition(index);
    const margin = 6;
    const gap = 12;
    const { width, height } = tooltip.getBoundingClientRect();
    const room = { width: plot.clientWidth, height: plot.clientHeight };
    let left = x + gap;
    if (left + width > room.width - margin) left = x - gap - width;
    let top = y - height / 2;
    top = Math.min(Math.max(top, margin), room.height - height - margin);
    tooltip.style.left = `${Math.max(margin, left)}px`;
    tooltip.style.top = `${top}px`;
  }

  function hideTooltip() {
    tooltip.hidden = true;
    tooltip.dataset.index = "";
  }

  async function showTooltip(index) {
    tooltip.replaceChildren(`#${index}`);
    tooltip.hidden = false;
    placeTooltip(index);
    const key = `${state.model}:${index}`;
    if (!briefs.has(key)) {
      briefs.set(key, fetch(`/api/concepts/${index}/brief?model=${encodeURIComponent(state.model)}`).then((r) => r.json()));
    }
    const brief = await briefs.get(key);
    if (tooltip.hidden || tooltip.dataset.index !== String(index)) return;
    const head = document.createElement("div");
    const delta = document.createElement("b");
    delta.className = "delta-value";
    delta.textContent = brief.delta === null ? "no δ" : `δ ${brief.delta.toFixed(3)}${brief.significant ? "" : " (n.s.)"}`;
    head.append(`#${brief.concept} `, delta);
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = brief.label;
    tooltip.replaceChildren(head, label);
    placeTooltip(index);
  }

  function drawHits() {
    // the concepts of the current search, ringed on the map
    hitsSvg.replaceChildren();
    if (!plot.dataset.points) return;
    const ids = [...searchResults.querySelectorAll("a[data-concept]")].map((a) => Number(a.dataset.concept));
    for (const concept of ids) {
      if (!Number.isInteger(concept) || concept < 0 || concept >= nConcepts) continue;
      const [cx, cy] = scatterplot.getScreenPosition(concept);
      const ring = document.createElementNS("http://www.w3.org/2000/svg", "circle");
      Object.entries({ cx, cy, r: basePointSize + 5, class: "hit" }).forEach(([k, v]) => ring.setAttribute(k, v));
      ring.dataset.concept = String(concept);
      hitsSvg.append(ring);
    }
    hitsSvg.dataset.hits = String(hitsSvg.childElementCount);
  }

  // -- scatter events ------------------------------------------------------------------------------------------
  scatterplot.subscribe("pointOver", (index) => {
    tooltip.dataset.index = String(index);
    showTooltip(index);
  });
  scatterplot.subscribe("pointOut", hideTooltip);
  scatterplot.subscribe("select", ({ points }) => {
    if (restoring) return;
    hideTooltip();
    if (points.length === 1) openConcept(points[0]);
    else if (points.length > 1) openSelection(points);
  });
  scatterplot.subscribe("lassoEnd", ({ coordinates }) => {
    // regl-scatterplot reports the drawn polygon in data (layout) coordinates: that polygon is the selection's state
    if (restoring || !coordinates || coordinates.length < 3) return;
    state.sel = coordinates.map(([x, y]) => [x, y]);
    window.history.pushState(null, "", urlOf(state));
  });
  let pendingFrame = 0;
  scatterplot.subscribe("view", () => {
    cancelAnimationFrame(pendingFrame);
    pendingFrame = requestAnimationFrame(() => {
      drawEdges();
      drawHits();
      if (!tooltip.hidden && tooltip.dataset.index) placeTooltip(Number(tooltip.dataset.index));
    });
  });
  // regl-scatterplot resizes its canvas from a throttled ResizeObserver of its own: redraw the edges after it has
  let resizeTimer = 0;
  new ResizeObserver(() => {
    fitRenderer();
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => requestAnimationFrame(() => { drawEdges(); drawHits(); }), 250);
  }).observe(plot);

  // -- controls ------------------------------------------------------------------------------------------------
  async function changeView(update) {
    const modelChanged = update.model !== undefined && update.model !== state.model;
    Object.assign(state, update);
    window.history.pushState(null, "", urlOf(state));
    edgeModel.textContent = state.model;
    await draw();
    if (modelChanged) {
      document.getElementById("search").dispatchEvent(new Event("search"));
      await Promise.all([loadCard(), loadContext(), restoreSelection()]);
    }
  }
  // the controls act as they change: Enter in one of them must not submit (and reload) the page
  document.getElementById("controls").addEventListener("submit", (event) => event.preventDefault());
  controls.model.addEventListener("change", () => changeView({ model: controls.model.value }));
  controls.colour.addEventListener("change", () => changeView({ colour: controls.colour.value }));
  controls.size.addEventListener("change", () => changeView({ size: controls.size.value }));
  controls.select.addEventListener("change", () => {
    state.select = controls.select.value === "box" ? "box" : "lasso";
    scatterplot.set({ lassoType: state.select === "box" ? "rectangle" : "freeform" });
    window.history.pushState(null, "", urlOf(state));
  });
  controls.radius.addEventListener("input", () => { radiusValue.textContent = Number(controls.radius.value).toFixed(2); });
  controls.radius.addEventListener("change", () => {
    state.radius = Number(controls.radius.value);
    window.history.pushState(null, "", urlOf(state));
    loadContext();
  });
  jump.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    const concept = Number(jump.value);
    if (!Number.isInteger(concept) || concept < 0 || concept >= nConcepts) {
      jump.setCustomValidity(`concept ids run from 0 to ${nConcepts - 1}`);
      jump.reportValidity();
      return;
    }
    jump.setCustomValidity("");
    openConcept(concept, { zoom: true });
  });
  root.addEventListener("click", (event) => {
    const close = event.target.closest("[data-close]");
    if (close) {
      document.querySelector(close.dataset.close).innerHTML = "";
      if (close.dataset.close === "#selection" && state.sel) {
        state.sel = null;
        window.history.pushState(null, "", urlOf(state));
      }
      return;
    }
    const link = event.target.closest("a[data-concept]");
    if (!link || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    openConcept(Number(link.dataset.concept), { zoom: true });
  });
  document.body.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target.id === "search-results") drawHits();
    if (event.detail.target.id === "label-block") {
      for (const key of briefs.keys()) if (key.endsWith(`:${state.concept}`)) briefs.delete(key);
    }
  });

  window.addEventListener("popstate", async () => {
    const before = { ...state };
    Object.assign(state, readUrl());
    syncControls();
    hideTooltip();
    edgeModel.textContent = state.model;
    if (before.select !== state.select) scatterplot.set({ lassoType: state.select === "box" ? "rectangle" : "freeform" });
    if (before.model !== state.model || before.colour !== state.colour || before.size !== state.size) await draw();
    const selText = (s) => (s.sel ? polygonToText(s.sel) : "");
    if (selText(before) !== selText(state) || (state.sel && before.model !== state.model)) await restoreSelection();
    if (before.concept !== state.concept || before.model !== state.model) {
      if (state.concept === null) scatterplot.zoomToOrigin({ transition: true, transitionDuration: 300 });
      await Promise.all([loadCard(), loadContext()]);
    } else if (before.radius !== state.radius) {
      await loadContext();
    }
  });

  // -- first paint: the server rendered the card of ?concept=, the scatter draws the rest ------------------------
  syncControls();
  window.history.replaceState(null, "", urlOf(state));
  draw()
    .then(() => Promise.all([loadContext(), restoreSelection()]))
    .catch((error) => {
      status.hidden = false;
      status.textContent = `the map could not be drawn: ${error.message}`;
    });
}

const root = document.getElementById("explorer");
if (root) main(root);
