/* Live updates for the console's run page, run list and approvals queue, by polling: no build step, no library.

   A page opts in with data-live="run|list|queue" on its main element and says whether anything it shows is
   still open with data-live-state="open|done". Every few seconds (data-live-interval, in ms) the page asks its
   own URL again with the header X-Console-Live: 1; the server answers with only the parts that change, and this
   script puts them in place without touching what the operator is doing: text being typed, boxes ticked,
   the element that has focus, <details> that are open. Polling stops when nothing shown is open any more
   (the run list then only looks for new runs, slowly) and pauses while the tab is hidden. */
(function () {
  "use strict";

  const root = document.querySelector("[data-live]");
  if (!root || !window.fetch || !window.DOMParser) {
    return;
  }
  const kind = root.dataset.live;
  const interval = Number(root.dataset.liveInterval || 2000);
  const idleInterval = Number(root.dataset.liveIdleInterval || 0);
  let timer = null;
  let failures = 0;
  let stopped = false;

  function parse(html) {
    return new DOMParser().parseFromString(html, "text/html");
  }

  function hasUserState(element) {
    // Something the operator is in the middle of: focus, typed text, a ticked box.
    if (element.contains(document.activeElement) && document.activeElement !== document.body) {
      const tag = document.activeElement.tagName;
      if (tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT") {
        return true;
      }
    }
    for (const field of element.querySelectorAll("textarea, input[type=text]")) {
      if (field.value.trim() !== "") {
        return true;
      }
    }
    return element.querySelector("input[type=checkbox]:checked") !== null;
  }

  function replaceKeepingState(current, fresh) {
    // Re-open the <details> that were open and give focus back to the element that had it.
    const open = Array.from(current.querySelectorAll("details[open][id]"), (d) => d.id);
    const focused = current.contains(document.activeElement) ? document.activeElement.id : "";
    current.replaceWith(fresh);
    for (const id of open) {
      const details = document.getElementById(id);
      if (details) {
        details.open = true;
      }
    }
    if (focused) {
      const target = document.getElementById(focused);
      if (target) {
        target.focus({ preventScroll: true });
      }
    }
  }

  function signature(element) {
    // The CSRF token of a form is masked afresh in every response: it does not make a region different.
    return element.outerHTML.replace(/name="csrfmiddlewaretoken" value="[^"]*"/g, 'name="csrfmiddlewaretoken"');
  }

  // --- The run page: regions replaced whole when they changed. ---------------------------------------------
  const served = new Map();

  function updateRegions(doc) {
    for (const fresh of doc.querySelectorAll("[data-live-region]")) {
      const current = document.getElementById(fresh.id);
      if (!current) {
        continue;
      }
      const before = served.get(fresh.id);
      const now = signature(fresh);
      if (before !== undefined && before === now) {
        continue; // unchanged since last time: keep the operator's open details and focus as they are
      }
      served.set(fresh.id, now);
      if (before === undefined && signature(current) === now) {
        continue;
      }
      replaceKeepingState(current, document.importNode(fresh, true));
      // Say a change of status to screen readers once, from a live region that is never replaced itself.
      const said = fresh.dataset.liveAnnounce;
      const announcer = document.getElementById("live-announce");
      if (said && announcer && current.dataset.liveAnnounce !== said) {
        announcer.textContent = said;
      }
    }
  }

  // --- The run list: cells of the rows shown, patched in place; other changes announced. -------------------
  function rowKey(row) {
    const marker = row.querySelector("[data-run]");
    return marker ? marker.dataset.run : null;
  }

  function updateList(doc) {
    const table = document.getElementById("result_list");
    const freshTable = doc.getElementById("result_list");
    const notice = document.getElementById("live-notice");
    if (!table || !freshTable) {
      return;
    }
    const freshRows = new Map();
    for (const row of freshTable.querySelectorAll("tbody tr")) {
      freshRows.set(rowKey(row), row);
    }
    const shown = new Set();
    for (const row of table.querySelectorAll("tbody tr")) {
      const key = rowKey(row);
      shown.add(key);
      const fresh = freshRows.get(key);
      if (!fresh) {
        row.classList.add("live-gone");
        continue;
      }
      row.classList.remove("live-gone");
      const cells = row.children;
      const freshCells = fresh.children;
      for (let i = 0; i < cells.length && i < freshCells.length; i++) {
        if (cells[i].classList.contains("action-checkbox")) {
          continue; // the operator's selection, and Django's actions.js bound to it
        }
        if (cells[i].innerHTML !== freshCells[i].innerHTML) {
          cells[i].innerHTML = freshCells[i].innerHTML;
        }
      }
    }
    const added = Array.from(freshRows.keys()).filter((key) => !shown.has(key)).length;
    const gone = table.querySelectorAll("tbody tr.live-gone").length;
    if (notice && (added || gone)) {
      const what = [];
      if (added) {
        what.push(added === 1 ? "1 new run" : added + " new runs");
      }
      if (gone) {
        what.push(gone === 1 ? "1 run no longer matches" : gone + " runs no longer match");
      }
      notice.querySelector(".live-notice-text").textContent = what.join(", ") + ".";
      notice.hidden = false;
    }
  }

  // --- The approvals queue: cards added, patched around their forms, or removed. ---------------------------
  function updateQueue(doc) {
    const summary = document.getElementById("queue-summary");
    const freshSummary = doc.getElementById("queue-summary");
    if (summary && freshSummary && summary.innerHTML !== freshSummary.innerHTML) {
      summary.innerHTML = freshSummary.innerHTML;
    }
    const bar = document.getElementById("bulk-approve");
    const freshBar = doc.getElementById("bulk-approve");
    if (bar && freshBar) {
      bar.hidden = freshBar.hidden;
    }
    const list = document.getElementById("queue-cards");
    const freshList = doc.getElementById("queue-cards");
    if (!list || !freshList) {
      return;
    }
    const freshCards = Array.from(freshList.querySelectorAll(".approval-card"));
    const wanted = new Set(freshCards.map((card) => card.id));
    for (const card of list.querySelectorAll(".approval-card")) {
      if (wanted.has(card.id)) {
        continue;
      }
      if (hasUserState(card)) {
        // Decided or expired elsewhere while the operator was writing here: say so, keep their text.
        if (!card.classList.contains("is-stale")) {
          card.classList.add("is-stale");
          for (const button of card.querySelectorAll("button, input[type=checkbox]")) {
            button.disabled = true;
          }
          const note = document.createElement("p");
          note.className = "stale-note";
          note.setAttribute("role", "status");
          note.textContent = "This request is no longer waiting (decided, expired or cancelled). Reload to see its outcome.";
          card.querySelector("header").after(note);
        }
      } else {
        card.remove();
      }
    }
    let previous = null;
    for (const fresh of freshCards) {
      const current = document.getElementById(fresh.id);
      if (!current) {
        const card = document.importNode(fresh, true);
        if (previous) {
          previous.after(card);
        } else {
          list.prepend(card);
        }
        previous = card;
        continue;
      }
      for (const part of fresh.querySelectorAll("[data-card-part]")) {
        const mine = current.querySelector('[data-card-part="' + part.dataset.cardPart + '"]');
        if (mine && mine.innerHTML !== part.innerHTML && !hasUserState(mine)) {
          mine.innerHTML = part.innerHTML;
        }
      }
      previous = current;
    }
    const empty = document.getElementById("queue-empty");
    if (empty) {
      empty.hidden = list.querySelector(".approval-card") !== null;
    }
  }

  function apply(doc) {
    if (kind === "run") {
      updateRegions(doc);
    } else if (kind === "list") {
      updateList(doc);
    } else if (kind === "queue") {
      updateQueue(doc);
    }
    const state = doc.querySelector("[data-live-state]");
    return state ? state.dataset.liveState : "done";
  }

  function schedule(delay) {
    clearTimeout(timer);
    if (!stopped && delay > 0) {
      timer = setTimeout(tick, delay);
    }
  }

  async function tick() {
    if (document.hidden) {
      return; // resumed by visibilitychange
    }
    let state = "open";
    try {
      const response = await fetch(window.location.href, {
        headers: { "X-Console-Live": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.redirected || !response.ok) {
        // Signed out, permission gone or the run deleted: stop rather than hammer the server.
        stopped = true;
        const notice = document.getElementById("live-notice");
        if (notice) {
          notice.querySelector(".live-notice-text").textContent = "Live updates stopped; reload the page.";
          notice.hidden = false;
        }
        return;
      }
      state = apply(parse(await response.text()));
      failures = 0;
    } catch (error) {
      failures += 1; // the network or the server is down for a moment: try again, less often
    }
    root.dataset.liveState = state;
    if (state === "done") {
      schedule(idleInterval);
    } else {
      schedule(Math.min(interval * 2 ** failures, 30000));
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !stopped) {
      schedule(10);
    }
  });
  if (root.dataset.liveState === "done") {
    schedule(idleInterval);
  } else {
    schedule(interval);
  }
})();
