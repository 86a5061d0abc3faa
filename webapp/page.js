// The page's hooks, run once in <head> (webapp/ui.py): the browser's owner cookie, keyboard shortcuts,
// a click on the chart selects that utterance, the selected row and problem rows are highlighted and
// the selected row kept in the table's view. They send their value through a hidden text field and
// click its hidden button (the value carries "@<time>": the same value twice is still a new event).
(() => {
  // This browser's owner token (webapp/owners.py), sent as a cookie with every request of the page,
  // from the first one on: made once, kept in the browser's storage.
  const KEY = "emotion-workbench-owner";
  let owner = localStorage.getItem(KEY);
  if (!owner || owner.length < 32) {
    owner = Array.from(crypto.getRandomValues(new Uint8Array(24)), (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem(KEY, owner);
  }
  document.cookie = `__OWNER_COOKIE__=${owner}; path=/; SameSite=Strict; max-age=31536000`;
  const EMOTIONS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"];
  const send = (id, value) => {
    const el = document.querySelector(`#${id} textarea, #${id} input`);
    if (!el) return;
    el.value = `${value}@${Date.now()}`;
    el.dispatchEvent(new Event("input", {bubbles: true}));
    setTimeout(() => document.getElementById(`${id}-go`)?.click(), 0);   // sends the field's new value
  };
  const click = (id) => { const b = document.getElementById(id); if (b && !b.disabled) b.click(); };
  const typing = (t) => t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
  document.addEventListener("keydown", (e) => {
    if (typing(e.target) || e.altKey || e.metaKey) return;
    if (e.ctrlKey) {
      if (e.key.toLowerCase() === "z") { e.preventDefault(); click("undo-btn"); }
      return;
    }
    if (e.key === "ArrowDown" || e.key === "j") { e.preventDefault(); click("next-btn"); }
    else if (e.key === "ArrowUp" || e.key === "k") { e.preventDefault(); click("prev-btn"); }
    else if (/^[1-7]$/.test(e.key)) { e.preventDefault(); send("wb-key", "emotion:" + EMOTIONS[+e.key - 1]); }
    else if (e.key === "p") { e.preventDefault(); click("play-utt"); }
  });
  // Keep the selected row in sight: the server writes "INDEX:ROWS:…" (the row's place in the table's
  // page) into a hidden field. The table is virtual (rows out of sight are not in the page; drawn
  // cells are named cell-ROW-COL), so step the scroll by the drawn rows' height until row INDEX is
  // drawn, then bring it into the table's view. Only the table scrolls, never the page.
  let lastPlace = "";
  const scroller = () => Array.from(document.querySelectorAll("#transcript *")).find(
    (el) => el.scrollHeight > el.clientHeight + 20 && /(auto|scroll)/.test(getComputedStyle(el).overflowY));
  const drawn = (box) => Array.from(box.querySelectorAll('[data-testid^="cell-"][data-testid$="-0"]'))
    .map((td) => [+td.dataset.testid.split("-")[1], td.closest("tr, .virtual-row")]).filter(([i, tr]) => tr);
  const bringIn = (box, index, tries) => {
    const rows = drawn(box);
    if (!rows.length) return;
    const hit = rows.find(([i]) => i === index);
    const top = box.getBoundingClientRect().top;
    if (hit) {
      const r = hit[1].getBoundingClientRect();
      if (r.top < top + 40 || r.bottom > top + box.clientHeight) box.scrollTop += r.top - top - box.clientHeight / 3;
      return;
    }
    if (tries <= 0) return;
    const first = rows[0], last = rows[rows.length - 1];
    const height = (last[1].getBoundingClientRect().bottom - first[1].getBoundingClientRect().top) / Math.max(1, last[0] - first[0] + 1);
    box.scrollTop += (index - (first[0] + last[0]) / 2) * height;
    setTimeout(() => bringIn(box, index, tries - 1), 80);
  };
  const follow = () => {
    const field = document.querySelector("#wb-table-place textarea, #wb-table-place input");
    const place = field ? field.value : "";
    if (!place || place === lastPlace) return;
    const box = scroller();
    if (!box) return;
    lastPlace = place;
    bringIn(box, Number(place.split(":")[0]), 8);
  };
  let queued = false;
  const refresh = () => {
    queued = false;
    const plot = document.querySelector("#chart .js-plotly-plot");
    if (plot && plot.on && !plot.__wbHooked) {
      plot.__wbHooked = true;
      plot.on("plotly_click", (ev) => {
        const cd = ev && ev.points && ev.points[0] && ev.points[0].customdata;
        if (cd !== undefined && cd !== null) send("wb-pick", Array.isArray(cd) ? cd[0] : cd);
      });
    }
    document.querySelectorAll('#transcript [data-testid^="cell-"][data-testid$="-0"]').forEach((td) => {
      const tr = td.closest("tr, .virtual-row");
      if (!tr) return;
      tr.classList.toggle("wb-selected", td.innerText.trim().startsWith("▶"));
      const last = tr.lastElementChild;
      tr.classList.toggle("wb-problem", !!last && last.innerText.includes("⚠"));
    });
    follow();
  };
  new MutationObserver(() => { if (!queued) { queued = true; requestAnimationFrame(refresh); } })
    .observe(document.documentElement, {childList: true, subtree: true, characterData: true});
})();
