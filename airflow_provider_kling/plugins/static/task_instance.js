// The "Kling" tab of a task instance: the video(s) of this try, and the live status of a task in flight.
"use strict";

async function load() {
  const summary = document.getElementById("summary");
  const query = new URLSearchParams(window.location.search);
  let data;
  try {
    data = await getJSON(`api/task-instance?${query.toString()}`);
  } catch (error) {
    showError(summary, error);
    return;
  }
  if (!data.is_kling_task) {
    summary.textContent = "This task instance has no Kling record: it is not a Kling task, or this try has not submitted one yet.";
    return;
  }
  summary.textContent = `Kling task ${data.cards.map((card) => card.kling_task_id).join(", ")} of this try`;
  document.getElementById("cards").replaceChildren(...data.cards.map((card) => renderCard(card, data.now)));
}

load();
