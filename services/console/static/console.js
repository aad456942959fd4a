// wecom-bus console: confirm before Replay/Drop, "select all", and a live <main> where the
// page asks for it (data-refresh = seconds). No build step, no dependencies.
"use strict";

function wire(root) {
  for (const button of root.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }
  const head = root.querySelector("table.letters thead th");
  if (head && !head.querySelector("input")) {
    const all = document.createElement("input");
    all.type = "checkbox";
    all.id = "select-all";
    all.setAttribute("aria-label", "select all");
    all.addEventListener("change", () => {
      for (const box of root.querySelectorAll('input[name="ids"][form="bulk"]')) box.checked = all.checked;
    });
    head.appendChild(all);
  }
}

async function refresh(main, seconds) {
  try {
    const response = await fetch(window.location.href, { credentials: "same-origin", cache: "no-store" });
    if (response.ok && !response.redirected) {
      const next = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("main");
      if (next) {
        main.innerHTML = next.innerHTML;
        wire(main);
      }
    }
  } catch (error) {
    // the console or Redis is away for a moment: try again at the next tick
  }
  setTimeout(() => refresh(main, seconds), seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  wire(document);
  const main = document.getElementById("main");
  const seconds = main ? Number(main.dataset.refresh) : 0;
  if (seconds > 0) setTimeout(() => refresh(main, seconds), seconds * 1000);
});
