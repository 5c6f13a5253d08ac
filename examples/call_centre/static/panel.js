// The desk page's live part: attempts change as callers answer, without a reload.
//
// The server sends every change of this agent's attempts on /events (server-sent
// events); each is the attempt as wording.view() describes it. This script only
// sets text and toggles elements the page already has: the CSP allows it no markup.

const current = document.getElementById("current");
const list = document.querySelector(".history tbody");
const clock = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

function localTime(element, iso) {
  if (iso) element.dateTime = iso;
  if (element.dateTime) element.textContent = clock.format(new Date(element.dateTime));
}

function showInList(attempt) {
  const row = list?.querySelector(`tr[data-attempt="${CSS.escape(attempt.id)}"]`);
  if (!row) return;
  const badge = row.querySelector(".outcome .badge");
  badge.dataset.status = attempt.status;
  badge.textContent = attempt.label;
  if (attempt.done && !row.querySelector(".done-mark")) {
    const mark = document.createElement("span");
    mark.className = "done-mark";
    mark.textContent = ` · ${attempt.done.label}`;
    badge.after(mark);
  }
}

function showCurrent(attempt) {
  if (!current || current.dataset.attempt !== attempt.id) return;
  const changed = current.dataset.status !== attempt.status;
  current.dataset.status = attempt.status;
  current.querySelector(".expiry").hidden = attempt.final;
  if (changed) {
    // Text changes inside the role=status region are read out once.
    const badge = current.querySelector(".status .badge");
    badge.dataset.status = attempt.status;
    badge.textContent = attempt.label;
    current.querySelector(".status .sentence").textContent = attempt.sentence;
    document.title = `${attempt.label} · Caller verification`;
  }
  const identity = current.querySelector(".identity");
  if (attempt.identity) {
    for (const field of ["subject", "name", "method"]) {
      identity.querySelector(`[data-field="${field}"]`).textContent = attempt.identity[field];
    }
    localTime(identity.querySelector('[data-field="verified_at"]'), attempt.identity.verified_at);
    identity.hidden = false;
  }
  identity.querySelector(".done-form").hidden = attempt.status !== "verified" || Boolean(attempt.done);
  const note = identity.querySelector(".done-note");
  note.hidden = !attempt.done;
  if (attempt.done) localTime(note.querySelector("time"), attempt.done.at);
}

function countDown() {
  const expiry = current?.querySelector(".expiry");
  const time = expiry?.querySelector("time");
  if (!time || expiry.hidden) return;
  let left = expiry.querySelector(".left");
  if (!left) {
    left = document.createElement("span");
    left.className = "left muted";
    time.after(left);
  }
  const seconds = Math.max(0, Math.round((new Date(time.dateTime) - Date.now()) / 1000));
  const minutes = Math.floor(seconds / 60);
  left.textContent = ` (${minutes}:${String(seconds % 60).padStart(2, "0")} left)`;
}

for (const time of document.querySelectorAll("time[datetime]")) localTime(time);

if (list || current) {
  const source = new EventSource("/events");
  source.addEventListener("attempt", (event) => {
    const attempt = JSON.parse(event.data);
    showInList(attempt);
    showCurrent(attempt);
  });
  source.addEventListener("error", () => {
    // Refused (logged out, session over): the browser gives up; so does the page.
    if (source.readyState === EventSource.CLOSED) window.location.assign("/login");
  });
  countDown();
  setInterval(countDown, 1000);
}
