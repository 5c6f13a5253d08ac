// The page: routes (#enrol=, #request=, #history, #devices, the list), talks to the
// device API and to the service worker. Approval happens only here, never in the worker.
import * as api from "./api.js";
import { uvChallenge } from "./digest.js";
import { h } from "./dom.js";
import { normaliseKey, subscriptionFor, syncSubscription } from "./push.js";
import * as screens from "./screens.js";
import { forgetDevice, loadDevice, saveDevice } from "./store.js";
import * as webauthn from "./webauthn.js";

const main = document.getElementById("screen");
const tabs = document.getElementById("tabs");
const banner = document.getElementById("banner");

const state = {
  device: null,
  requests: new Map(), // ref -> request, with `deadline` (ms since epoch, local clock)
  webauthn: null, // {rp_id, credentials} from the pending list; null where the server has none
  flash: null,
  view: null, // {name, ref?}
};
let renderCount = 0;
let registering = null;

function route() {
  const hash = location.hash.replace(/^#/, "");
  const [name, value] = hash.split("=", 2);
  if (name === "enrol" && value) return { name: "enrol", code: decodeURIComponent(value) };
  if (name === "request" && value) return { name: "request", ref: decodeURIComponent(value) };
  if (name === "history" || name === "devices") return { name };
  return { name: "list" };
}

/** Navigate to `hash` ("" = the list), optionally with a one-off notice on top. */
function go(hash, flash = null, kind = "info") {
  state.flash = flash;
  state.flashKind = kind;
  if (hash === "") {
    // Request, outcome and setup pages are transient: Back should not return to them.
    history.replaceState(null, "", location.pathname);
    render();
  } else if (location.hash === hash) {
    render();
  } else {
    location.hash = hash;
  }
}

function show(...elements) {
  const flash = state.flash ? screens.notice(state.flash, state.flashKind ?? "info") : null;
  state.flash = null;
  main.replaceChildren(...[flash, ...elements].filter(Boolean));
  main.focus({ preventScroll: true });
}

function problem(error) {
  if (error instanceof api.ApiError && error.status === 401) {
    return "This phone is no longer accepted (it may have been removed, or its clock is wrong).";
  }
  if (error instanceof TypeError) {
    return "Can't reach the server. Check your connection and try again.";
  }
  return error.message || String(error);
}

function showTabs(current) {
  tabs.hidden = !state.device;
  for (const link of tabs.querySelectorAll("a")) {
    const section = current === "request" ? "list" : current;
    if (link.dataset.view === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function fetchRequests() {
  const { requests, webauthn: uvState } = await api.deviceCall("requests");
  state.webauthn = uvState ?? null;
  const fetchedAt = Date.now();
  const withDeadline = (request) => ({ ...request, deadline: fetchedAt + request.expires_in * 1000 });
  state.requests = new Map(requests.map((request) => [request.ref, withDeadline(request)]));
  return [...state.requests.values()];
}

async function render() {
  const mine = ++renderCount;
  const current = route();
  const stale = () => mine !== renderCount;
  state.view = current;
  showTabs(current.name);
  if (current.name === "enrol") return renderEnrol(current.code);
  if (!state.device) return show(screens.notEnrolledScreen());
  try {
    if (current.name === "request") return await renderRequest(current.ref, stale);
    if (current.name === "history") {
      const { decisions } = await api.deviceCall("history");
      if (!stale()) show(screens.historyScreen(decisions));
      return;
    }
    if (current.name === "devices") {
      const { devices } = await api.deviceCall("devices");
      if (state.webauthn === null) await fetchRequests(); // whether the server offers it
      const missing = devices.some((d) => d.this_device && d.user_verification_keys === 0);
      const prepared = missing && canVerifyUsers() ? webauthn.prepareRegistration() : null;
      const onSetUp = prepared ? () => setUpUserVerification("#devices", prepared) : null;
      if (!stale()) show(screens.devicesScreen(devices, { onRemove: removeDevice, onSetUp }));
      return;
    }
    const requests = await fetchRequests();
    const onOpen = (ref) => go(`#request=${encodeURIComponent(ref)}`);
    if (!stale()) show(screens.requestListScreen(requests, { onOpen }));
  } catch (error) {
    if (!stale()) show(screens.notice(problem(error), "error"));
  }
}

async function renderRequest(ref, stale) {
  await fetchRequests();
  if (stale()) return;
  const request = state.requests.get(ref);
  if (!request) {
    const gone =
      "That request is no longer waiting for an answer: it was answered elsewhere, withdrawn or it expired.";
    return go("", gone);
  }
  const uv = uvStatus(request);
  // Prepared before the tap (see webauthn.prepareRegistration).
  if (uv === "ready") request.uvChallenge = await uvChallenge(request);
  const prepared = uv === "missing" ? webauthn.prepareRegistration() : null;
  if (stale()) return;
  const onDecide = (decision, number) => decide(request, decision, number);
  const onSetUp = () => setUpUserVerification(`#request=${encodeURIComponent(ref)}`, prepared);
  show(screens.approvalScreen(request, { onDecide, uv, onSetUp }));
}

/** Whether this phone can check the user here: the server offers it and the browser can. */
function canVerifyUsers() {
  return state.webauthn !== null && webauthn.supported();
}

/** For the approval screen: null (not needed), "ready", "missing" or "unavailable". */
function uvStatus(request) {
  if (request.user_verification !== "required") return null;
  if (!canVerifyUsers()) return "unavailable";
  return state.webauthn.credentials.length > 0 ? "ready" : "missing";
}

async function setUpUserVerification(returnTo, prepared = null) {
  try {
    state.webauthn = await webauthn.register(null, prepared);
  } catch (error) {
    const text = webauthn.notConfirmed(error)
      ? "Fingerprint, face or PIN was not set up: it was cancelled or not confirmed."
      : `Fingerprint, face or PIN was not set up. ${problem(error)}`;
    // Shown again, with fresh options for another try.
    return go(returnTo, text, "error");
  }
  go(returnTo, "Fingerprint, face or PIN is set up on this phone.");
}

function uvProblem(error) {
  if (error instanceof api.ApiError && error.error === "user_verification_failed") {
    return "The fingerprint, face or PIN check didn't fit this request, so nothing was approved.";
  }
  if (error instanceof api.ApiError && error.error === "user_verification_required") {
    return "This request can only be approved with your fingerprint, face or phone PIN.";
  }
  return null;
}

async function decide(request, decision, number) {
  let assertion = null;
  if (decision === "approve" && request.user_verification === "required") {
    try {
      assertion = await webauthn.verifyUser(request, state.webauthn, request.uvChallenge);
    } catch (error) {
      const text = webauthn.notConfirmed(error)
        ? "Your fingerprint, face or PIN wasn't confirmed, so nothing was approved. " +
          "Try again, or deny the request."
        : `Nothing was approved: the fingerprint, face or PIN check failed. ${problem(error)}`;
      main.prepend(screens.notice(text, "error"));
      return;
    }
  }
  let result;
  try {
    result = await api.decide(request, decision, number, assertion);
  } catch (error) {
    if (error instanceof api.ApiError && error.requestGone) {
      return go("", `The request from ${request.client_name} is no longer waiting for an answer.`);
    }
    const text = uvProblem(error) ?? `Your answer was not sent. ${problem(error)}`;
    main.prepend(screens.notice(text, "error"));
    return;
  }
  state.requests.delete(request.ref);
  state.view = { name: "outcome", ref: request.ref };
  await closeNotifications(request.ref);
  // An approval with the wrong number is recorded as a denial.
  const outcome = decision === "approve" && result.status !== "approved" ? "mismatch" : decision;
  show(screens.outcomeScreen(request, outcome, { onBack: () => go("") }));
}

async function closeNotifications(ref) {
  const registration = await navigator.serviceWorker.getRegistration();
  const shown = (await registration?.getNotifications({ tag: ref })) ?? [];
  for (const notification of shown) notification.close();
}

async function removeDevice(device) {
  try {
    await api.deviceCall("remove", { device_id: device.device_id });
  } catch (error) {
    main.prepend(screens.notice(problem(error), "error"));
    return;
  }
  if (device.this_device) {
    await forgetDevice();
    state.device = null;
    return go("", "This phone has been removed. It will no longer receive requests.");
  }
  go("#devices", `“${device.name}” has been removed.`);
}

function renderEnrol(code) {
  show(
    screens.enrolScreen({
      defaultName: "My phone",
      replacing: state.device?.displayName,
      onSubmit: (name) => enrol(code, name),
    }),
  );
}

async function enrol(code, name) {
  // Asked first, inside the tap: iOS only shows the prompt in response to a gesture.
  if ((await Notification.requestPermission()) !== "granted") {
    throw new Error(
      "Notifications are blocked. Allow them for this app in your phone's settings, then try again.",
    );
  }
  const config = await configWithPush();
  await registering;
  const registration = await navigator.serviceWorker.ready;
  const subscription = await subscriptionFor(registration, config.vapid_public_key);
  let result;
  try {
    result = await api.enrol(config.issuer, { code, name, subscription: subscription.toJSON() });
  } catch (error) {
    if (error instanceof api.ApiError && error.status === 410) {
      throw new Error("This setup link has already been used or has expired. Ask for a new one.");
    }
    throw new Error(problem(error));
  }
  const { answer, keyPair } = result;
  const previous = state.device;
  state.device = {
    deviceId: answer.device_id,
    name,
    displayName: answer.user.display_name,
    issuer: config.issuer,
    keyPair,
    endpoint: subscription.endpoint,
    vapidKey: normaliseKey(config.vapid_public_key),
  };
  await saveDevice(state.device);
  // The old registration's key has just been overwritten: drop it from the account too.
  if (previous) api.deviceCall("remove", {}, previous).catch(() => {});
  // The one-time code leaves the address bar and the history.
  history.replaceState(null, "", location.pathname);
  const uv = await userVerificationAtEnrolment(config);
  state.view = { name: "enrolled" };
  showTabs("");
  let prepared = uv === "off" ? webauthn.prepareRegistration(state.device) : null;
  const onSetUp = async () => {
    if ((await userVerificationAtEnrolment(config, prepared)) !== "on") {
      prepared = webauthn.prepareRegistration(state.device); // a challenge serves one attempt
      const text = "Fingerprint, face or PIN was not set up. You can try again later from Devices.";
      main.prepend(screens.notice(text, "error"));
      return;
    }
    showEnrolled(answer.user.display_name, "on", onSetUp);
  };
  showEnrolled(answer.user.display_name, uv, onSetUp);
}

function showEnrolled(displayName, uv, onSetUp) {
  show(screens.enrolledScreen({ displayName, uv, onSetUp, onContinue: () => go("") }));
}

/** Register a fingerprint, face or PIN key for the new device: "on", "off" or "unavailable". */
async function userVerificationAtEnrolment(config, prepared = null) {
  if (!config.webauthn_rp_id || !webauthn.supported()) return "unavailable";
  try {
    state.webauthn = await webauthn.register(state.device, prepared);
    return "on";
  } catch {
    return "off";
  }
}

/** On every open: push must reach this phone with the server's current VAPID key. */
async function keepSubscriptionCurrent() {
  if (!state.device) return;
  if (Notification.permission !== "granted") {
    banner.replaceChildren(
      screens.notice("Notifications are off: you won't be alerted to new requests.", "warn"),
      h("button", { type: "button", class: "secondary", onclick: enableNotifications }, "Turn on"),
    );
    banner.hidden = false;
    return;
  }
  banner.hidden = true;
  const config = await configWithPush();
  await registering;
  const registration = await navigator.serviceWorker.ready;
  state.device = await syncSubscription(registration, state.device, config.vapid_public_key);
}

async function configWithPush() {
  const config = await api.getConfig();
  if (!config.vapid_public_key) throw new Error("The server can't send notifications yet. Try again later.");
  return config;
}

async function enableNotifications() {
  await Notification.requestPermission();
  keepSubscriptionCurrent().catch(reportBackground);
}

function reportBackground(error) {
  banner.replaceChildren(screens.notice(problem(error), "error"));
  banner.hidden = false;
}

function onWorkerMessage(event) {
  const message = event.data || {};
  const view = state.view || {};
  if (message.type === "open") return go(`#request=${encodeURIComponent(message.ref)}`);
  if (message.type === "dismiss" || message.type === "decided") {
    const request = state.requests.get(message.ref);
    state.requests.delete(message.ref);
    if (view.name === "request" && view.ref === message.ref) {
      const who = request ? `The request from ${request.client_name}` : "That request";
      return go("", `${who} is no longer waiting for an answer.`);
    }
  }
  if (view.name === "list") render();
}

function onTick() {
  const expired = screens.tick(main);
  if (expired.size === 0) return;
  const view = state.view || {};
  if (view.name === "request" && expired.has(view.ref)) {
    const request = state.requests.get(view.ref);
    state.requests.delete(view.ref);
    return go("", `The request from ${request?.client_name ?? "that service"} expired.`);
  }
  if (view.name === "list") {
    for (const ref of expired) main.querySelector(`li[data-ref="${CSS.escape(ref)}"]`)?.remove();
    if (!main.querySelector("li[data-ref]")) render();
  }
}

async function start() {
  if (!("serviceWorker" in navigator) || !("PushManager" in self)) {
    const text =
      "This browser can't receive push notifications. On iPhone, add this app to your Home Screen first.";
    main.replaceChildren(screens.notice(text, "error"));
    return;
  }
  const options = { type: "module", scope: "./", updateViaCache: "none" };
  registering = navigator.serviceWorker.register("sw.js", options);
  navigator.serviceWorker.addEventListener("message", onWorkerMessage);
  navigator.serviceWorker.startMessages();
  window.addEventListener("hashchange", () => render());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.view?.name === "list") render();
  });
  setInterval(onTick, 1000);
  state.device = await loadDevice();
  await render();
  keepSubscriptionCurrent().catch(reportBackground);
}

start();
