// The "Kling videos" page: filters in the address's query string, one /api/videos request per view.
"use strict";

const FILTERS = ["dag_id", "status", "since", "until"];

function currentQuery() {
  return new URLSearchParams(window.location.search);
}

const STATUS_LABELS = { in_flight: "In flight (Pending or Running)", landed: "Landed in S3" };

function fillSelect(select, values, chosen) {
  for (const value of values) {
    const option = el("option", { value, text: STATUS_LABELS[value] || value });
    if (value === chosen) option.selected = true;
    select.append(option);
  }
}

function totalsRows(table, rows, labelOf) {
  const body = table.querySelector("tbody");
  body.replaceChildren();
  const most = Math.max(1, ...rows.map((row) => row.billed_seconds));
  for (const row of rows) {
    const bar = el("span", { className: "bar" });
    bar.style.width = `${Math.round((120 * row.billed_seconds) / most)}px`;
    body.append(el("tr", {}, el("td", { text: labelOf(row) }), el("td", { text: String(row.tasks) }),
      el("td", { text: String(Math.round(row.billed_seconds * 10) / 10) }), el("td", {}, bar)));
  }
}

function go(changes) {
  const query = currentQuery();
  for (const [name, value] of Object.entries(changes)) {
    if (value) query.set(name, value); else query.delete(name);
  }
  window.location.search = query.toString();
}

async function load() {
  const query = currentQuery();
  const summary = document.getElementById("summary");
  let data;
  try {
    data = await getJSON(`api/videos?${query.toString()}`);
  } catch (error) {
    showError(summary, error);
    return;
  }
  fillSelect(document.getElementById("filter-dag"), data.dags, query.get("dag_id"));
  fillSelect(document.getElementById("filter-status"), data.statuses, query.get("status"));
  document.getElementById("filter-since").value = data.since || "";
  document.getElementById("filter-until").value = data.until || "";
  document.getElementById("totals-all").textContent = `(${Math.round(data.totals.billed_seconds * 10) / 10} s in all)`;
  totalsRows(document.getElementById("totals-day"), data.totals.per_day, (row) => row.day);
  totalsRows(document.getElementById("totals-dag"), data.totals.per_dag, (row) => row.dag_id);
  const cards = document.getElementById("cards");
  cards.replaceChildren(...data.cards.map((card) => renderCard(card, data.now)));
  summary.textContent = data.total
    ? `${data.total} Kling task${data.total === 1 ? "" : "s"}, newest first${data.truncated ? " (the range holds more: narrow it)" : ""}`
    : "No Kling task matches these filters.";
  document.getElementById("page-label").textContent = `Page ${data.page} of ${data.pages}`;
  const prev = document.getElementById("prev");
  const next = document.getElementById("next");
  prev.disabled = data.page <= 1;
  next.disabled = data.page >= data.pages;
  prev.addEventListener("click", () => go({ page: String(data.page - 1) }));
  next.addEventListener("click", () => go({ page: String(data.page + 1) }));
}

document.getElementById("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const changes = { page: "" };
  for (const name of FILTERS) changes[name] = form.get(name) || "";
  go(changes);
});

load();
