// rnnkit's unit viewer: the page's only script. It reads the data embedded in
// <script id="viz-data" type="application/json"> (the format `rnnkit viz --json` writes,
// docs/viz.md) and computes everything it shows from the same uint8 codes Python stored:
//   v' = lo_u + q[u, t] * scale_u                      (dequantised value of unit u at t)
//   colour: x = clamp((v' - lo) / (hi - lo), 0, 1) over the signal's range [lo, hi];
//           x >= 0.5 blends white to red (214, 39, 40) by s = 2 (x - 0.5),
//           x <  0.5 blends white to blue (31, 119, 180) by s = 2 (0.5 - x);
//           each channel 255 + (target - 255) * s, rounded half up
//   variance, saturation and Pearson's r with the pattern's 0/1 token indicator as
//   rnnkit.diagnostics.ranking defines them; offsets are UTF-16 units, as JavaScript's.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("viz-data").textContent);
  const T = D.tokens.ids.length;
  const RED = [214, 39, 40];
  const BLUE = [31, 119, 180];
  const $ = (id) => document.getElementById(id);

  function codes(signal) {
    if (!signal._q) {
      const bin = atob(signal.q);
      const q = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) q[i] = bin.charCodeAt(i);
      signal._q = q;
    }
    return signal._q;
  }

  function unitValues(signal, u) {
    const q = codes(signal);
    const lo = signal.lo[u];
    const scale = signal.scale[u];
    const out = new Float64Array(T);
    for (let t = 0; t < T; t++) out[t] = lo + q[u * T + t] * scale;
    return out;
  }

  function colour(v, lo, hi) {
    let x = (v - lo) / (hi - lo);
    if (!(x >= 0)) x = 0;
    if (x > 1) x = 1;
    const target = x >= 0.5 ? RED : BLUE;
    const s = x >= 0.5 ? (x - 0.5) * 2 : (0.5 - x) * 2;
    return target.map((c) => Math.floor(255 + (c - 255) * s + 0.5));
  }

  function variance(v) {
    let sum = 0;
    for (let t = 0; t < T; t++) sum += v[t];
    const mean = sum / T;
    let ss = 0;
    for (let t = 0; t < T; t++) ss += (v[t] - mean) * (v[t] - mean);
    return ss / T;
  }

  function saturation(v, gate) {
    let hit = 0;
    for (let t = 0; t < T; t++) {
      if (gate ? v[t] < D.saturation.low || v[t] > D.saturation.high : Math.abs(v[t]) > D.saturation.edge) hit++;
    }
    return hit / T;
  }

  function correlation(v, m) {
    let sv = 0, sm = 0;
    for (let t = 0; t < T; t++) { sv += v[t]; sm += m[t]; }
    const mv = sv / T, mm = sm / T;
    let cross = 0, vv = 0, qq = 0;
    for (let t = 0; t < T; t++) {
      const a = v[t] - mv, b = m[t] - mm;
      cross += a * b; vv += a * a; qq += b * b;
    }
    const den = Math.sqrt(vv * qq);
    return den > 0 ? cross / den : 0;
  }

  // the pattern's indicator per token: 1 where the token shares a UTF-16 unit with a match
  let indicator = null;
  function matchPattern() {
    const source = $("pattern").value;
    const status = $("pattern-status");
    indicator = null;
    if (!source) { status.textContent = "type a JavaScript regular expression"; return; }
    let re;
    try {
      re = new RegExp(source, "g" + $("flags").value.replace(/g/g, ""));
    } catch (e) {
      status.textContent = "not a regular expression: " + e.message;
      return;
    }
    const text = D.text;
    const marked = new Uint8Array(text.length + 1);
    let matches = 0, m;
    while ((m = re.exec(text)) !== null) {
      const a = m.index, b = Math.max(a + m[0].length, a + 1);
      for (let i = a; i < b; i++) marked[i] = 1;
      matches++;
      if (m[0].length === 0) re.lastIndex++;
    }
    indicator = new Float64Array(T);
    let covered = 0;
    for (let t = 0; t < T; t++) {
      for (let i = D.tokens.start[t]; i < D.tokens.end[t]; i++) {
        if (marked[i]) { indicator[t] = 1; covered++; break; }
      }
    }
    status.textContent = matches + " matches cover " + covered + " of " + T + " tokens";
  }

  function layer() { return D.layers[+$("layer").value]; }
  function signalName() { return $("signal").value; }
  function signal() { return layer().signals[signalName()]; }

  function fillSignals() {
    const select = $("signal");
    const keep = select.value;
    select.innerHTML = "";
    for (const name of Object.keys(layer().signals)) {
      const o = document.createElement("option");
      o.value = name;
      o.textContent = name + (layer().signals[name].gate ? " (gate)" : "");
      select.appendChild(o);
    }
    if (keep in layer().signals) select.value = keep;
  }

  function currentUnit() {
    const s = signal();
    const u = Number($("unit").value);
    const ok = Number.isInteger(u) && u >= 0 && u < s.size;
    $("unit-status").textContent = ok ? "" : "unit must be an integer in [0, " + (s.size - 1) + "]";
    return ok ? u : null;
  }

  function scores(kind) {
    const s = signal();
    const out = new Float64Array(s.size);
    for (let u = 0; u < s.size; u++) {
      const v = unitValues(s, u);
      out[u] = kind === "variance" ? variance(v) : kind === "saturation" ? saturation(v, s.gate) : correlation(v, indicator);
    }
    return out;
  }

  function drawRanking() {
    const kind = $("ranking").value;
    const body = $("rank-table");
    body.innerHTML = "";
    if (kind === "pattern" && !indicator) {
      $("rank-status").textContent = "type a pattern to rank units by it";
      return;
    }
    $("rank-status").textContent = "";
    const s = scores(kind);
    const key = kind === "pattern" ? (u) => Math.abs(s[u]) : (u) => s[u];
    const order = Array.from(s.keys()).sort((a, b) => key(b) - key(a) || a - b);
    for (const u of order.slice(0, D.limits.rank_rows)) {
      const row = document.createElement("tr");
      row.dataset.unit = u;
      row.dataset.score = String(s[u]);
      row.innerHTML = "<td>" + u + "</td><td>" + s[u].toFixed(4) + "</td>";
      row.addEventListener("click", () => { $("unit").value = u; draw(); });
      body.appendChild(row);
    }
  }

  function drawText() {
    const s = signal();
    const u = currentUnit();
    const spans = $("text").querySelectorAll(".tok");
    const v = u === null ? null : unitValues(s, u);
    for (let t = 0; t < T; t++) {
      const el = spans[t];
      if (v === null) { el.style.backgroundColor = ""; continue; }
      const [r, g, b] = colour(v[t], s.range[0], s.range[1]);
      el.style.backgroundColor = "rgb(" + r + ", " + g + ", " + b + ")";
      el.classList.toggle("in-pattern", !!(indicator && indicator[t]));
      el.dataset.value = String(v[t]);
    }
    if (u !== null) {
      const st = "variance " + variance(v).toExponential(3) + ", saturation " + saturation(v, s.gate).toFixed(3) +
        (indicator ? ", r with pattern " + correlation(v, indicator).toFixed(4) : "");
      $("unit-summary").textContent = "layer " + $("layer").value + " " + signalName() + "[" + u + "]: " + st +
        "; colour range [" + s.range[0] + ", " + s.range[1] + "]";
    }
  }

  function draw() { drawText(); drawRanking(); }

  function buildText() {
    const box = $("text");
    let at = 0;
    for (let t = 0; t < T; t++) {
      const a = D.tokens.start[t], b = D.tokens.end[t];
      if (a > at) box.appendChild(document.createTextNode(D.text.slice(at, a)));
      const el = document.createElement("span");
      el.className = "tok";
      el.dataset.i = t;
      el.textContent = D.text.slice(Math.max(a, at), b);
      box.appendChild(el);
      at = Math.max(at, b);
    }
    if (at < D.text.length) box.appendChild(document.createTextNode(D.text.slice(at)));
  }

  function esc(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function showTip(event) {
    const el = event.target.closest(".tok");
    const tip = $("tip");
    if (!el) { tip.style.display = "none"; return; }
    const t = +el.dataset.i;
    const P = D.predictions;
    let html = "<b>" + esc(D.tokens.text[t]) + "</b> (token " + t + ")";
    if (el.dataset.value !== undefined) html += "<br>value " + Number(el.dataset.value).toPrecision(4);
    html += "<br>next, the model's top " + P.top_ids[t].length + ":<table>";
    P.top_ids[t].forEach((id, k) => {
      html += "<tr><td>" + esc(D.vocab[id]) + "</td><td>" + P.top_probs[t][k].toFixed(4) + "</td></tr>";
    });
    html += "</table>";
    if (P.next_prob[t] === null) html += "no next token in the text";
    else html += "true next <b>" + esc(D.tokens.text[t + 1]) + "</b>: p " + P.next_prob[t].toFixed(4) + ", loss " + P.loss[t].toFixed(3) + " nats";
    tip.innerHTML = html;
    tip.style.display = "block";
    tip.style.left = event.pageX + 12 + "px";
    tip.style.top = event.pageY + 12 + "px";
  }

  function init() {
    const L = D.layers.length;
    for (let l = 0; l < L; l++) {
      const o = document.createElement("option");
      o.value = l;
      o.textContent = "layer " + l;
      $("layer").appendChild(o);
    }
    $("layer").value = D.initial.layer;
    fillSignals();
    $("signal").value = D.initial.signal;
    $("unit").value = D.initial.unit;
    $("pattern").value = D.initial.pattern;
    $("ranking").value = D.initial.ranking;
    buildText();
    matchPattern();
    $("layer").addEventListener("change", () => { fillSignals(); draw(); });
    $("signal").addEventListener("change", draw);
    $("unit").addEventListener("input", drawText);
    $("ranking").addEventListener("change", drawRanking);
    for (const id of ["pattern", "flags"]) {
      $(id).addEventListener("input", () => { matchPattern(); draw(); });
    }
    $("text").addEventListener("mousemove", showTip);
    $("text").addEventListener("mouseleave", () => { $("tip").style.display = "none"; });
    draw();
    document.body.dataset.ready = "1";
  }

  init();
})();
