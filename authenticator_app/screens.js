// The screens: functions from data (and callbacks) to DOM. No fetching, no state.
import { detailCards, detailSummary } from "./details.js";
import { h } from "./dom.js";
import { ago, clock, decisionWords, hue, initials, scopeWords, when } from "./words.js";

// Under this many seconds left, the countdown turns urgent.
const SOON = 30;

/** A live "time left" label; app.js re-renders every element with data-deadline each second. */
function countdown(request) {
  return h(
    "span",
    { class: "left", dataset: { deadline: request.deadline, ref: request.ref } },
    `${clock((request.deadline - Date.now()) / 1000)} left`,
  );
}

/** A `<time>` reading "2 min ago", with the full date as its title; tick() keeps it current. */
function since(isoTime, prefix = "") {
  return h(
    "time",
    { datetime: isoTime, title: when(isoTime), dataset: { ago: isoTime, prefix } },
    `${prefix}${ago(isoTime)}`,
  );
}

/** The round initials badge of a service or account; hidden from screen readers (the name is there). */
export function avatar(name, extraClass = "") {
  return h(
    "span",
    { class: `avatar hue-${hue(name)} ${extraClass}`.trim(), "aria-hidden": "true" },
    initials(name),
  );
}

/** Update countdowns and relative times under `root`; return the refs whose time ran out. */
export function tick(root, now = Date.now()) {
  for (const element of root.querySelectorAll("time[data-ago]")) {
    const text = `${element.dataset.prefix ?? ""}${ago(element.dataset.ago, now)}`;
    if (element.textContent !== text) element.textContent = text;
  }
  const expired = new Set();
  for (const element of root.querySelectorAll("[data-deadline]")) {
    const seconds = (Number(element.dataset.deadline) - now) / 1000;
    if (element.tagName === "PROGRESS") element.value = Math.max(0, seconds);
    else element.textContent = `${clock(seconds)} left`;
    element.classList.toggle("soon", seconds <= SOON);
    if (seconds <= 0) expired.add(element.dataset.ref);
  }
  return expired;
}

export function notice(text, kind = "info") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** The binding message; `tag` "span" where only phrasing content is allowed (in a button). */
function message(request, tag = "p") {
  return request.binding_message
    ? h(tag, { class: "message" }, request.binding_message)
    : h(tag, { class: "message none" }, "No message with this request");
}

const PUSH_WORDS = { on: "Notifications on", off: "Notifications off", blocked: "Notifications blocked" };

/** Whose phone this is: name, masked email and whether notifications reach it. */
export function accountCard(account, push) {
  if (!account) return null;
  return h(
    "section",
    { class: "account-card", "aria-label": "Account" },
    avatar(account.display_name, "large"),
    h(
      "div",
      { class: "account-text" },
      h("p", { class: "account-name" }, account.display_name),
      account.masked_email && h("p", { class: "account-email" }, account.masked_email),
      push && h("p", { class: `push-state ${push}` }, PUSH_WORDS[push]),
    ),
  );
}

/** What the home screen says when requests only arrive while the app is open. */
function pushOffNote(push) {
  if (push === "on" || !push) return null;
  return h(
    "p",
    { class: "notice warn push-note" },
    push === "blocked"
      ? "Notifications are blocked, so new requests show up only while this app is open. "
      : "Notifications are off on this phone: new requests show up here while the app is open. ",
    h("a", { href: "#devices" }, "Turn on notifications"),
  );
}

export function notEnrolledScreen() {
  return h(
    "section",
    { class: "card center" },
    h("h2", {}, "This phone isn't set up yet"),
    h("p", {}, "Open the setup link or scan the QR code you were given to set it up."),
  );
}

export function enrolScreen({ defaultName, replacing, onSubmit }) {
  const name = h("input", {
    id: "device-name",
    name: "device-name",
    value: defaultName,
    maxlength: "64",
    autocomplete: "off",
    required: true,
  });
  const button = h("button", { class: "primary", type: "submit" }, "Set up this phone");
  const status = h("div", { class: "status", "aria-live": "polite" });
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        button.disabled = true;
        status.replaceChildren(notice("Setting up…"));
        try {
          await onSubmit(name.value.trim() || defaultName);
        } catch (error) {
          status.replaceChildren(notice(error.message, "error"));
          button.disabled = false;
        }
      },
    },
    h("h2", {}, "Set up this phone"),
    h("p", {}, "This phone will ask you to approve sign-ins and payments."),
    replacing && notice(`This phone is set up for ${replacing}. Continuing replaces that.`, "warn"),
    h("label", { for: "device-name" }, "Name this phone"),
    name,
    h(
      "p",
      { class: "small" },
      "You'll be asked to allow notifications, so requests reach you even when the app is " +
        "closed. Without them, requests show up while the app is open.",
    ),
    button,
    status,
  );
  return form;
}

const SET_UP_UV = "Set up fingerprint, face or PIN";

/** A button that runs `action` once per tap, disabled while it runs. */
function actionButton(label, style, action) {
  const button = h("button", { class: style, type: "button" }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** What the enrolment's fingerprint, face or PIN step came to: on, off or unavailable. */
function uvSetupNotice(uv, onSetUp) {
  if (uv === "on") {
    return h(
      "div",
      { class: "uv-status on" },
      notice("Fingerprint, face or PIN is set up. Some requests ask for it when you approve them."),
    );
  }
  if (uv === "off") {
    return h(
      "div",
      { class: "uv-status off" },
      notice(
        "Fingerprint, face or PIN isn't set up yet. Some requests can only be approved with it.",
        "warn",
      ),
      actionButton(SET_UP_UV, "secondary", onSetUp),
    );
  }
  return null;
}

/** `pushProblem`: null when notifications are on, else the plain words of why not. */
export function enrolledScreen({ account, uv, onSetUp, onContinue, pushProblem = null }) {
  return h(
    "section",
    { class: "card center ready" },
    h("p", { class: "big-mark", "aria-hidden": "true" }, "✓"),
    h("h2", {}, "This phone is ready"),
    h(
      "p",
      {},
      "Requests to approve for ",
      h("strong", { class: "user" }, account.display_name),
      account.masked_email && [" (", h("span", { class: "email" }, account.masked_email), ")"],
      " will appear here.",
    ),
    pushProblem
      ? h(
          "div",
          { class: "push-status off" },
          notice(`Notifications are off. ${pushProblem}`, "warn"),
        )
      : h(
          "div",
          { class: "push-status on" },
          notice("Notifications are on: requests reach this phone even when the app is closed."),
        ),
    uvSetupNotice(uv, onSetUp),
    h("button", { class: "primary", type: "button", onclick: onContinue }, "Done"),
  );
}

/** An inline SVG icon from the page's <template id="icons"> (drawn in the text colour). */
function icon(name) {
  const template = document.getElementById("icons");
  return template.content.querySelector(`[data-icon="${name}"]`).cloneNode(true);
}

/**
 * The home screen: whose phone this is, then the waiting requests. Each request is one
 * button holding only phrasing content (spans), so the markup stays valid.
 */
export function requestListScreen(requests, { onOpen, account = null, push = null }) {
  const header = [accountCard(account, push), pushOffNote(push)];
  if (requests.length === 0) {
    return h(
      "section",
      { class: "requests empty" },
      header,
      h("h2", {}, "No requests waiting"),
      h("p", { class: "muted" }, "When a service asks you to approve something, it shows up here."),
    );
  }
  return h(
    "section",
    { class: "requests" },
    header,
    h("h2", {}, requests.length === 1 ? "1 request waiting" : `${requests.length} requests waiting`),
    h(
      "ul",
      { class: "list" },
      requests.map((request) =>
        h(
          "li",
          { dataset: { ref: request.ref } },
          h(
            "button",
            { class: "request", type: "button", onclick: () => onOpen(request.ref) },
            avatar(request.client_name),
            h(
              "span",
              { class: "request-text" },
              h("span", { class: "client" }, request.client_name),
              detailSummary(request.authorization_details),
              message(request, "span"),
              countdown(request),
            ),
            icon("chevron"),
          ),
        ),
      ),
    ),
  );
}

/**
 * Why Approve needs (or cannot do) the fingerprint, face or PIN check. `uv`: null (not
 * needed), "ready", "missing" (no key on this phone) or "unavailable" (cannot be done here).
 */
function uvNotice(uv, onSetUp) {
  if (uv === "ready") {
    return h("p", { class: "uv-needed" }, "Approving asks for your fingerprint, face or phone PIN.");
  }
  if (uv === "missing") {
    return h(
      "div",
      { class: "uv-needed missing" },
      notice(
        "This request can only be approved with your fingerprint, face or phone PIN, and that " +
          "isn't set up on this phone yet. Set it up, then approve. Or deny the request.",
        "warn",
      ),
      actionButton(SET_UP_UV, "secondary", onSetUp),
    );
  }
  if (uv === "unavailable") {
    return notice(
      "This request can only be approved with a fingerprint, face or PIN check, which this " +
        "phone or browser can't do. You can deny it here.",
      "warn",
    );
  }
  return null;
}

/**
 * Who asks, what for, how long is left, then the choice. With number matching the
 * user must first pick the number the relying party's screen shows; Approve waits for it.
 * A request that needs user verification can only be approved once this phone can do it.
 */
export function approvalScreen(request, { onDecide, onBack, uv = null, onSetUp = null }) {
  const choice = (decision, style, label) =>
    h("button", { class: style, type: "button", dataset: { decision } }, label);
  const buttons = [
    choice("approve", "primary approve", "Approve"),
    choice("deny", "secondary deny", "Deny"),
    choice("not_me", "danger not-me", "This wasn't me"),
  ];
  const [approve] = buttons;
  const choices = request.number_choices ?? [];
  let picked = null;
  const numbers = choices.map((number) =>
    h("button", { class: "number", type: "button", "aria-pressed": "false" }, number),
  );
  const blocked = uv === "missing" || uv === "unavailable";
  // Why Approve is disabled, said beside it and tied to it (aria-describedby).
  const why = h("p", { class: "why", id: `approve-why-${request.ref.slice(0, 12)}` });
  approve.setAttribute("aria-describedby", why.id);
  const settle = () => {
    const needsNumber = choices.length > 0 && picked === null;
    approve.disabled = blocked || needsNumber;
    why.textContent = blocked
      ? "Approve is unavailable: see above."
      : needsNumber
        ? `Pick the number ${request.client_name} shows to approve.`
        : "";
    why.hidden = !approve.disabled;
  };
  for (const button of numbers) {
    button.addEventListener("click", () => {
      picked = button.textContent;
      for (const other of numbers) other.setAttribute("aria-pressed", String(other === button));
      settle();
    });
  }
  for (const button of buttons) {
    button.addEventListener("click", async () => {
      buttons.forEach((b) => (b.disabled = true));
      try {
        await onDecide(button.dataset.decision, picked);
      } finally {
        buttons.forEach((b) => (b.disabled = false));
        settle();
      }
    });
  }
  settle();
  const total = Math.max(1, request.expires_in);
  return h(
    "section",
    { class: "approval", dataset: { ref: request.ref } },
    h(
      "button",
      { class: "back", type: "button", onclick: onBack },
      icon("back"),
      "Back to requests",
    ),
    h(
      "div",
      { class: "rp" },
      avatar(request.client_name, "large"),
      h(
        "div",
        { class: "rp-text" },
        h("p", { class: "eyebrow" }, "Request from"),
        h("h2", { class: "client" }, request.client_name),
      ),
    ),
    detailCards(request.authorization_details),
    h("div", { class: "binding" }, message(request)),
    h("p", { class: "hint" }, "Approve only if this matches the screen where you started."),
    h("h3", {}, `If you approve, ${request.client_name} can:`),
    h("ul", { class: "scopes" }, scopeWords(request.scope).map((words) => h("li", {}, words))),
    choices.length > 0 &&
      h(
        "fieldset",
        { class: "numbers" },
        h("legend", {}, `Which number does ${request.client_name} show?`),
        h("div", { class: "number-row" }, numbers),
      ),
    h(
      "div",
      { class: "timer" },
      countdown(request),
      h("progress", {
        max: String(total),
        value: String(total),
        "aria-hidden": "true",
        dataset: { deadline: request.deadline, ref: request.ref },
      }),
    ),
    uvNotice(uv, onSetUp),
    h("div", { class: "actions" }, buttons[0], why, buttons.slice(1)),
    h("p", { class: "small" }, "“This wasn't me” denies it and reports that you didn't ask."),
  );
}

const OUTCOMES = {
  approve: ["✓", "Approved", (name) => `You can go back to ${name}.`],
  mismatch: [
    "✕",
    "Not approved",
    (name) => `That number was not the one ${name} showed, so the request was denied.`,
  ],
  deny: ["✕", "Denied", (name) => `${name} has been told you said no.`],
  not_me: ["!", "Denied and reported", (name) => `${name} has been told no, and that you didn't ask.`],
};

/** `outcome`: approve, deny, not_me, or mismatch (a wrong number was picked). */
export function outcomeScreen(request, outcome, { onBack }) {
  const [mark, title, text] = OUTCOMES[outcome];
  return h(
    "section",
    { class: `card center outcome ${outcome.replace("_", "-")}`, dataset: { ref: request.ref } },
    h("p", { class: "big-mark", "aria-hidden": "true" }, mark),
    h("h2", {}, title),
    h("p", {}, text(request.client_name)),
    h("button", { class: "secondary", type: "button", onclick: onBack }, "Back to requests"),
  );
}

export function historyScreen(decisions) {
  if (decisions.length === 0) {
    return h(
      "section",
      { class: "history empty" },
      h("h2", {}, "Recent decisions"),
      h("p", { class: "muted" }, "Nothing decided on this phone yet."),
    );
  }
  return h(
    "section",
    { class: "history" },
    h("h2", {}, "Recent decisions"),
    h(
      "ul",
      { class: "list" },
      decisions.map((item) =>
        h(
          "li",
          { class: `entry ${String(item.decision).replace("_", "-")}`, dataset: { ref: item.ref } },
          avatar(item.client_name),
          h(
            "div",
            { class: "entry-text" },
            h("span", { class: "client" }, item.client_name),
            message(item),
            h(
              "span",
              { class: "entry-foot" },
              h("span", { class: "decision" }, decisionWords(item.decision)),
              h("span", { class: "meta" }, since(item.decided_at)),
            ),
          ),
        ),
      ),
    ),
  );
}

/**
 * The user's devices. `push` describes this phone: "on", "off" or "blocked"; `onPushOn`
 * (this phone only, when notifications are not on) turns them on; `pushNote` says why
 * they are off, when known.
 */
export function devicesScreen(
  devices,
  { onRemove, onSetUp = null, onPushOn = null, pushNote = null, push = null },
) {
  return h(
    "section",
    { class: "devices" },
    h("h2", {}, "Your devices"),
    h(
      "ul",
      { class: "list" },
      devices.map((device) => {
        // "Remove" says which device to a screen reader: "Remove Work phone".
        const hiddenName = () => h("span", { class: "vh" }, ` ${device.name}`);
        const remove = h(
          "button",
          { class: "danger small-button", type: "button" },
          "Remove",
          hiddenName(),
        );
        let armed = false;
        remove.addEventListener("click", async () => {
          if (!armed) {
            armed = true;
            remove.replaceChildren("Tap again to remove", hiddenName());
            return;
          }
          remove.disabled = true;
          try {
            await onRemove(device);
          } finally {
            remove.disabled = false;
          }
        });
        const mine = device.this_device;
        const pushOn = mine ? push === "on" : device.push;
        return h(
          "li",
          { class: "entry device", dataset: { deviceId: device.device_id } },
          h(
            "div",
            { class: "entry-text" },
            h(
              "span",
              { class: "client" },
              device.name,
              mine && h("span", { class: "badge" }, "This phone"),
            ),
            h("span", { class: "meta" }, since(device.created_at, "Added ")),
            device.last_seen_at &&
              h("span", { class: "meta" }, since(device.last_seen_at, "Last used ")),
            h(
              "span",
              { class: `meta push ${pushOn ? "on" : "off"}` },
              pushOn ? "Notifications: on" : "Notifications: off",
            ),
            h(
              "span",
              { class: "meta uv" },
              device.user_verification_keys > 0
                ? "Fingerprint, face or PIN: on"
                : "Fingerprint, face or PIN: not set up",
            ),
            mine && !pushOn && pushNote && notice(pushNote, "warn"),
            mine &&
              !pushOn &&
              onPushOn &&
              actionButton("Turn on notifications", "primary small-button", onPushOn),
            mine &&
              device.user_verification_keys === 0 &&
              onSetUp &&
              actionButton(SET_UP_UV, "secondary small-button", onSetUp),
            remove,
          ),
        );
      }),
    ),
  );
}
