// The review page's keyboard and its calls to the review API. Catalog text is only ever set with textContent.
"use strict";
(function () {
  const items = Array.from(document.querySelectorAll("article.item"));
  const undoStack = []; // {decision, item}
  let current = 0;
  const status = document.getElementById("status");

  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "";
  }

  async function call(path, body) {
    const response = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail ? String(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : response.statusText);
    return data;
  }

  function pending(i) { return i >= 0 && i < items.length && !items[i].classList.contains("done"); }

  function show(i) {
    if (!items.length) return;
    current = Math.max(0, Math.min(i, items.length - 1));
    items.forEach((el, k) => el.classList.toggle("current", k === current));
    items[current].focus({preventScroll: true});
    items[current].scrollIntoView({block: "nearest"});
    document.getElementById("remaining").textContent = String(items.filter((_, k) => pending(k)).length);
  }

  function nextPending(from, step) {
    for (let k = from + step; k >= 0 && k < items.length; k += step) if (pending(k)) return k;
    return -1;
  }

  async function refreshStats() {
    const response = await fetch("/review/stats", {credentials: "same-origin"});
    if (!response.ok) return;
    const s = await response.json();
    document.getElementById("stat-decisions").textContent = String(s.decisions);
    document.getElementById("stat-per-hour").textContent = String(s.per_hour);
    document.getElementById("stat-agreement").textContent = s.agreement === null ? "—" : Math.round(100 * s.agreement) + "%";
    const body = document.querySelector("#stat-families tbody");
    const names = Array.from(new Set([...Object.keys(s.queue), ...Object.keys(s.families)])).sort();
    body.replaceChildren(...names.map((name) => {
      const f = s.families[name];
      const row = document.createElement("tr");
      for (const text of [name, f ? f.decisions : 0, f ? Math.round(100 * f.agreement) + "%" : "—", s.queue[name] || 0]) {
        const cell = document.createElement("td");
        cell.textContent = String(text);
        row.appendChild(cell);
      }
      return row;
    }));
  }

  async function decide(action, values) {
    const el = items[current];
    if (!el || !pending(current)) return;
    const body = {decisions: [{id: el.dataset.id, family: el.dataset.family, action: action, values: values || []}]};
    try {
      const result = await call("/review/decisions", body);
      undoStack.push({decision: result.decisions[0], index: current});
      el.classList.add("done");
      const note = el.querySelector(".decided");
      note.hidden = false;
      note.textContent = action === "reject" ? "rejected: none applies" : action + "ed: " + (values && values.length ? values.join(", ") : el.querySelector(".cand .value").textContent);
      say(el.dataset.id + " · " + el.dataset.family + ": " + note.textContent, false);
      const next = nextPending(current, 1);
      show(next >= 0 ? next : nextPending(items.length, -1) >= 0 ? nextPending(items.length, -1) : current);
      refreshStats();
      if (!items.some((_, k) => pending(k))) say("Page done: reload for more.", false);
    } catch (err) {
      say("Not saved: " + err.message, true);
    }
  }

  async function undo() {
    const last = undoStack.pop();
    if (!last) { say("Nothing to undo.", true); return; }
    try {
      await call("/review/undo", {decision: last.decision});
      const el = items[last.index];
      el.classList.remove("done");
      el.querySelector(".decided").hidden = true;
      say("Undone: " + el.dataset.id + " · " + el.dataset.family, false);
      show(last.index);
      refreshStats();
    } catch (err) {
      undoStack.push(last);
      say("Undo failed: " + err.message, true);
    }
  }

  function pick(n) {
    const buttons = items[current] ? items[current].querySelectorAll(".cand") : [];
    if (n > buttons.length) return;
    const value = buttons[n - 1].dataset.value;
    if (n === 1) decide("accept"); else decide("correct", [value]);
  }

  document.addEventListener("keydown", (event) => {
    const t = event.target;
    if (t && t.closest && t.closest("form.other") && event.key === "Escape") { t.blur(); show(current); return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (key === "a" || key === "Enter") decide("accept");
    else if (key >= "1" && key <= "9") pick(Number(key));
    else if (key === "x") decide("reject");
    else if (key === "o" && items[current]) items[current].querySelector("form.other input").focus();
    else if (key === "s" || key === "ArrowRight") { const n = nextPending(current, 1); show(n >= 0 ? n : current); }
    else if (key === "ArrowLeft") show(current - 1);
    else if (key === "u") undo();
    else if (key === "g") {
      const grid = document.body.classList.toggle("view-grid");
      document.body.classList.toggle("view-one", !grid);
      document.querySelector('select[name="view"]').value = grid ? "grid" : "one";
      show(current);
    }
    else return;
    event.preventDefault();
  });

  items.forEach((el, k) => {
    el.querySelector("form.other").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = event.target.querySelector("input");
      const value = input.value.trim();
      if (!value) return;
      show(k);
      decide("correct", [value]).then(() => { input.value = ""; input.blur(); });
    });
    el.addEventListener("click", (event) => { if (!event.target.closest("form")) show(k); });
    el.querySelectorAll(".cand").forEach((button, n) => button.addEventListener("click", (event) => {
      event.stopPropagation(); show(k); pick(n + 1);
    }));
  });

  document.getElementById("bulk").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    try {
      const result = await call("/review/bulk", {family: form.get("family"), min_score: Number(form.get("min_score"))});
      say("Accepted " + result.decisions.length + " items.", false);
      window.location.reload();
    } catch (err) {
      say("Bulk accept failed: " + err.message, true);
    }
  });

  show(0);
})();
