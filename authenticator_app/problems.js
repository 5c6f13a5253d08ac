// What went wrong in the browser, in plain words, each with the next step to take.
// Raw browser messages ("Registration failed - permission denied") are never shown.

const WHILE_OPEN = "Requests show up here while this app is open.";

/** kind -> [what happened, what to do next] */
const PROBLEMS = {
  offline: ["You're offline.", "Connect to the internet, then try again."],
  server_unreachable: [
    "Can't reach the server.",
    "Check your connection, then try again.",
  ],
  no_storage: [
    "This browser window can't keep the app's key, so this phone can't be set up here. " +
      "Private (incognito) windows often can't.",
    "Open the setup link in a normal browser window.",
  ],
  no_worker: [
    "This browser can't run the part of the app that receives notifications. " +
      "Private windows and some browsers don't allow it.",
    `${WHILE_OPEN} For notifications, open the app in a normal window of Chrome, Edge, ` +
      "Firefox or Safari.",
  ],
  unsupported: [
    "This browser can't receive notifications from web apps.",
    "On iPhone or iPad, add this app to your Home Screen (Share, then Add to Home Screen) " +
      `and open it from there. ${WHILE_OPEN}`,
  ],
  denied: [
    "Notifications are blocked for this app.",
    "Allow them in the site settings (the icon beside the web address) or in your phone's " +
      `settings, then choose Turn on notifications in Devices. ${WHILE_OPEN}`,
  ],
  dismissed: [
    "Notifications weren't allowed.",
    `Choose Turn on notifications in Devices, then Allow. ${WHILE_OPEN}`,
  ],
  private_window: [
    "This browser window can't receive notifications: private (incognito) windows don't allow them.",
    `Open the app in a normal window to get notifications. ${WHILE_OPEN}`,
  ],
  push_unreachable: [
    "This browser can't reach its notification service right now.",
    `${WHILE_OPEN} Try turning notifications on again later in Devices.`,
  ],
  push_lost: [
    "Notifications stopped reaching this phone: its notification subscription ended.",
    `Turn them on again in Devices. ${WHILE_OPEN}`,
  ],
  server_off: [
    "The server can't send notifications yet.",
    `${WHILE_OPEN} Try turning notifications on again later in Devices.`,
  ],
  server_refused: [
    "The server doesn't accept this browser's notification service.",
    `${WHILE_OPEN} Another browser may get notifications.`,
  ],
};

/** The plain text of `kind`; `onDevices`: said on the Devices screen, beside its button. */
export function problemText(kind, { onDevices = false } = {}) {
  const [what, next] = PROBLEMS[kind] ?? PROBLEMS.push_unreachable;
  const text = `${what} ${next}`;
  if (!onDevices) return text;
  return text
    .replace(" again later in Devices", " again later with the button below")
    .replace(" in Devices", " below");
}

/** What a failed pushManager.subscribe() means. */
export function subscribeProblem(error) {
  if (error?.name === "TimeoutError") return "push_unreachable";
  if (!navigator.onLine) return "offline";
  const permission = globalThis.Notification?.permission;
  if (permission === "denied") return "denied";
  // Chromium refuses push in an incognito window although notifications read "granted".
  if (/permission/i.test(error?.message ?? "") || error?.name === "NotAllowedError") {
    return "private_window";
  }
  return "push_unreachable";
}

/** An Error whose message is the plain text of `kind` (shown as it is). */
export class Problem extends Error {
  constructor(kind) {
    super(problemText(kind));
    this.kind = kind;
  }
}
