// Shared by the Kling view's pages. Every user-supplied text goes into the page through textContent only:
// a prompt holding <script> or <img onerror> is shown as text. No innerHTML anywhere.
"use strict";

const PROMPT_PREVIEW_CHARS = 160;
const LIVE_REFRESH_MS = 10000;
const LIVE_MAX_REFRESHES = 360; // an hour of a page left open, then it stops asking

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "className") node.className = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function formatSeconds(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "–";
  const value = Math.max(0, seconds);
  if (value < 60) return `${Math.floor(value)} s`;
  if (value < 3600) return `${Math.floor(value / 60)} min`;
  const hours = Math.floor(value / 3600);
  const minutes = Math.floor((value % 3600) / 60);
  return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
}

function statusText(status, since, now) {
  if (!status) return "Status unknown";
  if (typeof since !== "number") return String(status);
  const verb = status === "Success" ? "Succeeded" : status === "Failure" ? "Failed" : String(status);
  if (status === "Success" || status === "Failure") return `${verb} ${formatSeconds(now - since)} ago`;
  return `${verb} for ${formatSeconds(now - since)}`;
}

function formatTime(unixSeconds) {
  if (typeof unixSeconds !== "number") return "–";
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

// Only the server's own Airflow UI paths become links (never a javascript: or another host's URL). Inside
// the Airflow UI the page is a sandboxed iframe that may not navigate the top window, so a click asks the
// UI's router (same origin) to show the page, as its own links do.
function uiLink(path, label) {
  if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//")) return null;
  const link = el("a", { href: path, target: "_top", text: label });
  link.addEventListener("click", (event) => {
    if (window.top === window || event.ctrlKey || event.metaKey || event.shiftKey) return;
    try {
      window.top.history.pushState({}, "", path);
      window.top.dispatchEvent(new PopStateEvent("popstate"));
      event.preventDefault();
    } catch (error) { /* another origin: let the browser try */ }
  });
  return link;
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (error) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.json();
}

function videoElement(source, card) {
  if (source.state === "expired" || !source.src) {
    return el("div", { className: "no-video", "data-video-state": "expired", text: "Expired, not landed: the result URL is no longer valid and the video was never copied to S3." });
  }
  const label = source.state === "landed" ? "Landed in S3" : "Result URL (temporary: land it in S3 to keep it)";
  const video = el("video", { controls: "", muted: "", preload: "metadata", playsinline: "", src: source.src, "data-video-state": source.state, "aria-label": `Video ${source.index} of ${card.kling_task_id}` });
  video.muted = true;
  return el("figure", {}, video, el("figcaption", { className: "summary", text: label }));
}

function promptElement(request) {
  const prompt = request.prompt || (request.shots || []).map((shot) => shot.prompt).filter(Boolean).join(" / ");
  if (!prompt) return el("p", { className: "prompt summary", text: "(no prompt)" });
  if (prompt.length <= PROMPT_PREVIEW_CHARS) return el("p", { className: "prompt", text: prompt });
  return el("details", { className: "prompt" },
    el("summary", { text: prompt.slice(0, PROMPT_PREVIEW_CHARS) + "…" }),
    el("p", { text: prompt }));
}

function detailList(pairs) {
  const list = el("dl");
  for (const [name, value] of pairs) {
    list.append(el("dt", { text: name }), el("dd", { text: value === null || value === undefined || value === "" ? "–" : value }));
  }
  return list;
}

function renderCard(card, now) {
  const request = card.request || {};
  const status = el("p", { className: `status status-${card.status}`, "data-role": "status", text: statusText(card.status, card.status_since, now) });
  const node = el("article", { className: "card", "data-kling-task-id": card.kling_task_id, "data-dag-id": card.dag_id });
  for (const source of card.videos.length ? card.videos : [null]) {
    node.append(source ? videoElement(source, card) : el("div", { className: "no-video", "data-video-state": "none", text: card.in_flight ? "No video yet: the task is in flight." : "No video." }));
  }
  node.append(status, promptElement(request));
  if (card.error) node.append(el("p", { className: "error", text: card.error }));
  node.append(detailList([
    ["DAG", card.dag_id],
    ["Run", card.run_id],
    ["Task", card.map_index >= 0 ? `${card.task_id} [${card.map_index}]` : card.task_id],
    ["Mode", request.mode || "default"],
    ["Aspect ratio", request.aspect_ratio || "default"],
    ["Duration", request.duration ? `${request.duration} s` : "default"],
    ["Model", request.model],
    ["Kling task id", card.kling_task_id],
    ["external_task_id", card.external_task_id],
    ["Billed seconds", card.usage_seconds === null || card.usage_seconds === undefined ? "–" : String(card.usage_seconds)],
    ["Submitted", formatTime(card.submitted_at)],
    ["Finished", formatTime(card.finished_at)],
    ["Airflow state", card.ti_state],
  ]));
  node.append(el("p", { className: "links" },
    uiLink(card.links.dag_run, "DAG run"),
    uiLink(card.links.task_instance, "Task instance"),
    uiLink(card.links.landing_task_instance, "Landing task")));
  if (card.in_flight && card.live) followLiveStatus(card, status);
  return node;
}

// One request per card every LIVE_REFRESH_MS at most; the server asks the API at most once per 10 s per task.
function followLiveStatus(card, statusNode) {
  let refreshes = 0;
  const refresh = async () => {
    refreshes += 1;
    try {
      const answer = await getJSON(card.live);
      const live = answer.live || {};
      statusNode.textContent = statusText(live.status || card.status, live.status_since, answer.now);
      statusNode.className = `status status-${live.status || card.status}`;
      if (live.error) statusNode.title = live.error;
      if (live.status === "Success" || live.status === "Failure") return;
    } catch (error) {
      statusNode.title = String(error.message || error);
    }
    if (refreshes < LIVE_MAX_REFRESHES && statusNode.isConnected) setTimeout(refresh, LIVE_REFRESH_MS);
  };
  refresh();
}

function showError(summary, error) {
  summary.textContent = `Could not load the Kling videos: ${error.message || error}`;
  summary.className = "summary error";
}
