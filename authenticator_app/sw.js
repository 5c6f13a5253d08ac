// The service worker (a module worker): shows prompts, closes stale ones, and answers
// Deny / "This wasn't me" straight from the notification. Approval needs the page:
// the notification offers no Approve button.
import { ApiError, decide, getConfig } from "./api.js";
import { summaryText } from "./details.js";
import { syncSubscription } from "./push.js";
import { loadDevice, saveDevice } from "./store.js";

const APP_URL = new URL("./", self.location.href).href;
const ICON = new URL("icons/icon-192.png", APP_URL).href;
// Monochrome (white on transparent): Android draws it in the status bar.
const BADGE = new URL("icons/badge-96.png", APP_URL).href;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let message = null;
  try {
    message = event.data ? event.data.json() : null;
  } catch {
    message = null;
  }
  if (message?.type === "prompt") event.waitUntil(showPrompt(message));
  else if (message?.type === "dismiss") event.waitUntil(dismiss(message.ref));
});

// Notifications whose showNotification() has not settled yet. Chromium can lose a
// notification still being shown when getNotifications() runs, so lookups wait for these.
const showing = new Set();

async function show(title, options) {
  const shown = self.registration.showNotification(title, options);
  showing.add(shown);
  try {
    await shown;
  } finally {
    showing.delete(shown);
  }
}

// A prompt whose authorization details did not fit in the push offers no Deny: a decision
// covers what was shown, and the details are only in the app.
async function showPrompt(prompt) {
  const lines = [summaryText(prompt.authorization_details), prompt.binding_message];
  if (prompt.authorization_details_omitted) lines.unshift("Open the app to see the details.");
  await show(prompt.client_name || "Approval request", {
    body: lines.filter(Boolean).join("\n") || "Asks you to approve a request.",
    tag: prompt.ref,
    requireInteraction: true,
    icon: ICON,
    badge: BADGE,
    data: { prompt },
    actions: prompt.authorization_details_omitted
      ? []
      : [
          { action: "deny", title: "Deny" },
          { action: "not_me", title: "This wasn't me" },
        ],
  });
  await tellPages({ type: "prompt", ref: prompt.ref });
}

async function closeNotifications(ref) {
  await Promise.allSettled([...showing]);
  for (const notification of await self.registration.getNotifications({ tag: ref })) {
    notification.close();
  }
}

async function dismiss(ref) {
  await closeNotifications(ref);
  await tellPages({ type: "dismiss", ref });
}

async function tellPages(message) {
  const pages = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const page of pages) page.postMessage(message);
}

self.addEventListener("notificationclick", (event) => {
  const prompt = event.notification.data?.prompt;
  event.notification.close();
  if (prompt && (event.action === "deny" || event.action === "not_me")) {
    event.waitUntil(answer(prompt, event.action));
  } else {
    event.waitUntil(openApp(prompt?.ref));
  }
});

/**
 * Focus an open app window (and point it at the request), or open a new one at the
 * request. A fresh window lists the pending requests itself, so even a browser that opens
 * start_url instead (iOS) shows the request.
 */
async function openApp(ref) {
  const url = ref ? `${APP_URL}#request=${encodeURIComponent(ref)}` : APP_URL;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((page) => page.url.startsWith(APP_URL));
  if (!open) {
    try {
      return await self.clients.openWindow(url);
    } catch {
      return null; // the browser refused a window: the notification is gone, the app lists it
    }
  }
  // Point the page at the request first: focusing may be refused, navigating is not.
  if (ref) open.postMessage({ type: "open", ref });
  try {
    await open.focus();
  } catch {
    // Not allowed to take the focus: the page shows the request when the user comes back.
  }
  return open;
}

async function answer(prompt, decision) {
  try {
    const result = await decide(prompt, decision);
    await tellPages({ type: "decided", ref: prompt.ref, status: result.status });
  } catch (error) {
    if (error instanceof ApiError && error.requestGone) {
      await tellPages({ type: "dismiss", ref: prompt.ref });
      return;
    }
    // Never fail silently: the user believes they said no.
    await show("Your answer was not sent", {
      body: `Open the app to answer ${prompt.client_name}.`,
      tag: prompt.ref,
      icon: ICON,
      badge: BADGE,
      data: { prompt },
    });
  }
}

// The push service replaced or ended the subscription. Firefox hands over the new one;
// Chromium gives none (newSubscription null), so the worker subscribes again itself.
self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil(renewSubscription(event.newSubscription ?? null));
});

async function renewSubscription(renewed) {
  const device = await loadDevice();
  if (!device?.endpoint) return; // push is off on this phone: nothing to renew
  let updated;
  try {
    const { vapid_public_key: vapidKey } = await getConfig();
    if (!vapidKey) throw new Error("no VAPID key");
    updated = await syncSubscription(self.registration, device, vapidKey, renewed);
  } catch {
    // Not renewed: the app says notifications stopped, and offers to turn them on again.
    updated = { ...device, endpoint: null, vapidKey: null, pushProblem: "push_lost" };
    await saveDevice(updated);
  }
  await tellPages({ type: "subscription", push: Boolean(updated.endpoint) });
}
