// Keeping this phone's Web Push subscription in step with the server's VAPID key.
// Used by the page (on every open) and by the worker (pushsubscriptionchange).
import { deviceCall } from "./api.js";
import { b64urlDecode, b64urlEncode } from "./encoding.js";
import { saveDevice } from "./store.js";

export function normaliseKey(key) {
  return b64urlEncode(b64urlDecode(key));
}

function keyUsedBy(subscription) {
  const key = subscription.options?.applicationServerKey;
  return key ? b64urlEncode(key) : null;
}

/**
 * A subscription made with `vapidKey`: the current one when it used that key,
 * otherwise a fresh one (the old one is dropped: the server can no longer sign for it).
 */
export async function subscriptionFor(registration, vapidKey, knownKey = null) {
  const wanted = normaliseKey(vapidKey);
  const current = await registration.pushManager.getSubscription();
  if (current) {
    if ((keyUsedBy(current) ?? knownKey) === wanted) return current;
    await current.unsubscribe();
  }
  return registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: b64urlDecode(wanted),
  });
}

/**
 * Make sure the server pushes to this phone's current subscription with its current
 * VAPID key; tell it (POST /device/subscription) when either changed. Returns the
 * device record, updated when something changed.
 */
export async function syncSubscription(registration, device, vapidKey, renewed = null) {
  const subscription = renewed ?? (await subscriptionFor(registration, vapidKey, device.vapidKey));
  const wanted = normaliseKey(vapidKey);
  if (subscription.endpoint === device.endpoint && wanted === device.vapidKey) return device;
  await deviceCall("subscription", { subscription: subscription.toJSON() }, device);
  const updated = { ...device, endpoint: subscription.endpoint, vapidKey: wanted };
  await saveDevice(updated);
  return updated;
}
