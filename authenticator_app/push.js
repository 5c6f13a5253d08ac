// Keeping this phone's Web Push subscription in step with the server's VAPID key.
// Used by the page (on every open, and to turn push on) and by the worker
// (pushsubscriptionchange). A phone without a subscription works too: the page
// then fetches its pending requests itself.
import { deviceCall } from "./api.js";
import { b64urlDecode, b64urlEncode } from "./encoding.js";
import { saveDevice } from "./store.js";

// pushManager.subscribe() can hang where no push service is reachable: give up after this.
export const SUBSCRIBE_TIMEOUT = 5000;

export function normaliseKey(key) {
  return b64urlEncode(b64urlDecode(key));
}

function keyUsedBy(subscription) {
  const key = subscription.options?.applicationServerKey;
  return key ? b64urlEncode(key) : null;
}

/** `promise`, or a TimeoutError once `ms` have passed. */
export function within(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new DOMException("timed out", "TimeoutError")), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A subscription made with `vapidKey`: the current one when it used that key,
 * otherwise a fresh one (the old one is dropped: the server can no longer sign for it).
 * Gives up with a TimeoutError after SUBSCRIBE_TIMEOUT.
 */
export async function subscriptionFor(registration, vapidKey, knownKey = null) {
  const wanted = normaliseKey(vapidKey);
  const current = await registration.pushManager.getSubscription();
  if (current) {
    if ((keyUsedBy(current) ?? knownKey) === wanted) return current;
    await current.unsubscribe();
  }
  const subscribing = registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: b64urlDecode(wanted),
  });
  return within(subscribing, SUBSCRIBE_TIMEOUT);
}

/** Tell the server (POST /device/subscription) and remember it; the updated device record. */
export async function registerSubscription(device, subscription, vapidKey) {
  await deviceCall("subscription", { subscription: subscription.toJSON() }, device);
  const updated = {
    ...device,
    endpoint: subscription.endpoint,
    vapidKey: normaliseKey(vapidKey),
    pushProblem: null,
  };
  await saveDevice(updated);
  return updated;
}

/**
 * Make sure the server pushes to this phone's current subscription with its current
 * VAPID key; tell it when either changed. Returns the device record, updated when
 * something changed. A device without push (no endpoint) is left as it is.
 */
export async function syncSubscription(registration, device, vapidKey, renewed = null) {
  if (!device.endpoint) return device;
  const subscription = renewed ?? (await subscriptionFor(registration, vapidKey, device.vapidKey));
  const wanted = normaliseKey(vapidKey);
  if (subscription.endpoint === device.endpoint && wanted === device.vapidKey) return device;
  return registerSubscription(device, subscription, vapidKey);
}
