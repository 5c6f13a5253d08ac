// The page: routes (#enrol=, #request=, #history, #devices, the list), talks to the
// device API and to the service worker. Approval happens only here, never in the worker.
// Without push (no subscription, notifications blocked, no service worker) the page
// fetches the pending requests itself: when opened, and every few seconds while visible.
import * as api from "./api.js";
import { uvChallenge } from "./digest.js";
import { h } from "./dom.js";
import { deviceName } from "./platform.js";
import { Problem, problemText, subscribeProblem } from "./problems.js";
import { normaliseKey, registerSubscription, subscriptionFor, syncSubscription } from "./push.js";
import * as screens from "./screens.js";
import { forgetDevice, loadDevice, saveDevice, storageWorks } from "./store.js";
import * as webauthn from "./webauthn.js";

// How often the open app asks for pending requests: often without push, now and then with it
// (a push can be late or lost).
const POLL_WITHOUT_PUSH = 5000;
const POLL_WITH_PUSH = 30000;

const main = document.getElementById("screen");
const tabs = document.getElementById("tabs");
const banner = document.getElementById("banner");
const announcer = document.getElementById("announcer");

const state = {
  device: null,
  requests: new Map(), // ref -> request, with `deadline` (ms since epoch, local clock)
  webauthn: null, // {rp_id, credentials} from the pending list; null where the server has none
  account: null, // {display_name, masked_email} from the pending list
  flash: null,
  view: null, // {name, ref?}
};
let renderCount = 0;
let registering = null; // the service worker's registration, or null without one
let pollTimer = null;

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
  if (flash) announce(flash);
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

/** Put `elements` on screen; `quiet` (a background refresh) keeps the focus where it is. */
function show(elements, { quiet = false } = {}) {
  const flash = state.flash ? screens.notice(state.flash, state.flashKind ?? "info") : null;
  state.flash = null;
  const list = Array.isArray(elements) ? elements : [elements];
  main.replaceChildren(...[flash, ...list].filter(Boolean));
  if (!quiet) main.focus({ preventScroll: true });
}

/** Say `text` to screen readers (the page's one polite live region). */
function announce(text) {
  announcer.textContent = "";
  // A new text node after a tick: the same words twice are announced twice.
  requestAnimationFrame(() => {
    announcer.textContent = text;
  });
}

function problem(error) {
  if (error instanceof Problem) return error.message;
  if (error instanceof api.ApiError && error.status === 401) {
    return "This phone is no longer accepted (it may have been removed, or its clock is wrong).";
  }
  if (error instanceof TypeError) {
    return problemText(navigator.onLine ? "server_unreachable" : "offline");
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

/** The number of waiting requests on the Requests tab. */
function showCount() {
  const count = tabs.querySelector(".count");
  const waiting = state.requests.size;
  count.hidden = waiting === 0;
  count.replaceChildren(String(waiting), h("span", { class: "vh" }, " waiting"));
}

/** Whether requests reach this phone as notifications: "on", "off" or "blocked". */
function pushState() {
  if (!state.device?.endpoint) return "off";
  if (globalThis.Notification?.permission !== "granted") return "blocked";
  return "on";
}

async function fetchRequests() {
  const asked = state.device;
  const answer = await api.deviceCall("requests");
  state.webauthn = answer.webauthn ?? null;
  if (answer.account) state.account = answer.account;
  const fetchedAt = Date.now();
  const withDeadline = (request) => ({ ...request, deadline: fetchedAt + request.expires_in * 1000 });
  state.requests = new Map(answer.requests.map((request) => [request.ref, withDeadline(request)]));
  showCount();
  // Unless the device record changed meanwhile (push was just turned on, say).
  if (state.device === asked) await noteServerPush(answer);
  return [...state.requests.values()];
}

/** The server says whether it can push here; a subscription it dropped is dropped here too. */
async function noteServerPush(answer) {
  const device = state.device;
  const account = answer.account ?? device.account;
  let updated = device;
  if (answer.push === false && device.endpoint) {
    updated = { ...device, endpoint: null, vapidKey: null, pushProblem: "push_lost" };
  }
  if (JSON.stringify(account) !== JSON.stringify(device.account)) updated = { ...updated, account };
  if (updated !== device) {
    state.device = updated;
    await saveDevice(updated);
  }
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
    if (current.name === "devices") return await renderDevices(stale);
    const requests = await fetchRequests();
    if (!stale()) showList(requests);
  } catch (error) {
    if (!stale()) show(screens.notice(problem(error), "error"));
  }
}

function showList(requests, options = {}) {
  const onOpen = (ref) => go(`#request=${encodeURIComponent(ref)}`);
  const account = state.account ?? state.device.account ?? null;
  show(screens.requestListScreen(requests, { onOpen, account, push: pushState() }), options);
}

async function renderDevices(stale) {
  const { devices } = await api.deviceCall("devices");
  if (state.webauthn === null) await fetchRequests(); // whether the server offers it
  const missing = devices.some((d) => d.this_device && d.user_verification_keys === 0);
  const prepared = missing && canVerifyUsers() ? webauthn.prepareRegistration() : null;
  const onSetUp = prepared ? () => setUpUserVerification("#devices", prepared) : null;
  const push = pushState();
  const kind = push === "blocked" ? "denied" : state.device.pushProblem;
  const pushNote = kind ? problemText(kind, { onDevices: true }) : null;
  if (stale()) return;
  show(
    screens.devicesScreen(devices, {
      onRemove: removeDevice,
      onSetUp,
      onPushOn: turnOnPush,
      pushNote,
      push,
    }),
  );
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
  show(screens.approvalScreen(request, { onDecide, onBack: () => go(""), uv, onSetUp }));
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

function prependError(text) {
  main.prepend(screens.notice(text, "error"));
  announce(text);
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
      prependError(text);
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
    prependError(uvProblem(error) ?? `Your answer was not sent. ${problem(error)}`);
    return;
  }
  state.requests.delete(request.ref);
  showCount();
  state.view = { name: "outcome", ref: request.ref };
  await closeNotifications(request.ref);
  // An approval with the wrong number is recorded as a denial.
  const outcome = decision === "approve" && result.status !== "approved" ? "mismatch" : decision;
  const screen = screens.outcomeScreen(request, outcome, { onBack: () => go("") });
  show(screen);
  announce(screen.querySelector("h2").textContent);
}

async function closeNotifications(ref) {
  if (!registering) return;
  const registration = await navigator.serviceWorker.getRegistration();
  const shown = (await registration?.getNotifications({ tag: ref })) ?? [];
  for (const notification of shown) notification.close();
}

async function removeDevice(device) {
  try {
    await api.deviceCall("remove", { device_id: device.device_id });
  } catch (error) {
    prependError(problem(error));
    return;
  }
  if (device.this_device) {
    await forgetDevice();
    state.device = null;
    state.account = null;
    state.requests.clear();
    return go("", "This phone has been removed. It will no longer receive requests.");
  }
  go("#devices", `“${device.name}” has been removed.`);
}

function renderEnrol(code) {
  show(
    screens.enrolScreen({
      defaultName: deviceName(),
      replacing: state.device?.displayName,
      onSubmit: (name) => enrol(code, name),
    }),
  );
}

/**
 * Ask for the notification permission now, inside the tap (iOS shows the prompt only in
 * response to a gesture); the answer is awaited later. Resolves to "granted", "denied",
 * "default" or "unsupported".
 */
function askPermission() {
  if (!("Notification" in self)) return Promise.resolve("unsupported");
  if (Notification.permission !== "default") return Promise.resolve(Notification.permission);
  return Notification.requestPermission().catch(() => "default");
}

/** The service worker's registration, or null where there is none. */
async function workerRegistration() {
  if (!registering) return null;
  try {
    await registering;
    return await navigator.serviceWorker.ready;
  } catch {
    return null;
  }
}

/**
 * A push subscription for this phone, or why there is none: {subscription, vapidKey} or
 * {problem} (a problems.js kind). Never throws; gives up on a subscribe() that hangs.
 */
async function subscribeForPush(config, permission) {
  const answer = await permission;
  if (!("PushManager" in self) || answer === "unsupported") return { problem: "unsupported" };
  const registration = await workerRegistration();
  if (!registration) return { problem: "no_worker" };
  if (answer === "denied") return { problem: "denied" };
  if (answer !== "granted") return { problem: "dismissed" };
  if (!config.vapid_public_key) return { problem: "server_off" };
  try {
    const subscription = await subscriptionFor(registration, config.vapid_public_key);
    return { subscription, vapidKey: config.vapid_public_key };
  } catch (error) {
    return { problem: subscribeProblem(error) };
  }
}

/** A refusal of the subscription itself (a push service the server does not allow). */
function subscriptionRefused(error) {
  return (
    error instanceof api.ApiError &&
    error.status === 400 &&
    /subscription|push service/i.test(error.message)
  );
}

async function enrol(code, name) {
  const permission = askPermission(); // first, inside the tap
  if (!navigator.onLine) throw new Problem("offline");
  if (!(await storageWorks())) throw new Problem("no_storage");
  let config;
  try {
    config = await api.getConfig();
  } catch (error) {
    throw new Error(problem(error));
  }
  const push = await subscribeForPush(config, permission);
  let result;
  let pushProblem = push.problem ?? null;
  try {
    try {
      result = await api.enrol(config.issuer, { code, name, subscription: push.subscription?.toJSON() ?? null });
    } catch (error) {
      if (!push.subscription || !subscriptionRefused(error)) throw error;
      // The code is still unspent: enrol without push.
      pushProblem = "server_refused";
      result = await api.enrol(config.issuer, { code, name, subscription: null });
    }
  } catch (error) {
    if (error instanceof api.ApiError && error.status === 410) {
      throw new Error("This setup link has already been used or has expired. Ask for a new one.");
    }
    throw new Error(problem(error));
  }
  const { answer, keyPair } = result;
  const previous = state.device;
  const account = {
    display_name: answer.user.display_name,
    masked_email: answer.user.masked_email ?? null,
  };
  state.device = {
    deviceId: answer.device_id,
    name,
    displayName: answer.user.display_name,
    account,
    issuer: config.issuer,
    keyPair,
    endpoint: pushProblem ? null : push.subscription.endpoint,
    vapidKey: pushProblem ? null : normaliseKey(push.vapidKey),
    pushProblem,
  };
  state.account = account;
  await saveDevice(state.device);
  // The old registration's key has just been overwritten: drop it from the account too.
  if (previous) api.deviceCall("remove", {}, previous).catch(() => {});
  // The one-time code leaves the address bar and the history.
  history.replaceState(null, "", location.pathname);
  const uv = await userVerificationAtEnrolment(config);
  state.view = { name: "enrolled" };
  showTabs("");
  const pushText = pushProblem ? problemText(pushProblem) : null;
  let prepared = uv === "off" ? webauthn.prepareRegistration(state.device) : null;
  const onSetUp = async () => {
    if ((await userVerificationAtEnrolment(config, prepared)) !== "on") {
      prepared = webauthn.prepareRegistration(state.device); // a challenge serves one attempt
      prependError("Fingerprint, face or PIN was not set up. You can try again later from Devices.");
      return;
    }
    showEnrolled(account, "on", onSetUp, pushText);
  };
  showEnrolled(account, uv, onSetUp, pushText);
  announce(pushText ? `This phone is ready. Notifications are off. ${pushText}` : "This phone is ready.");
  schedulePoll();
}

function showEnrolled(account, uv, onSetUp, pushProblem) {
  show(screens.enrolledScreen({ account, uv, onSetUp, pushProblem, onContinue: () => go("") }));
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

/** Devices → "Turn on notifications": subscribe, then tell the server (POST /device/subscription). */
async function turnOnPush() {
  const permission = askPermission(); // first, inside the tap
  let kind = null;
  try {
    const config = await api.getConfig();
    const push = await subscribeForPush(config, permission);
    if (push.problem) {
      kind = push.problem;
    } else {
      try {
        state.device = await registerSubscription(state.device, push.subscription, push.vapidKey);
      } catch (error) {
        if (!subscriptionRefused(error)) throw error;
        kind = "server_refused";
      }
    }
  } catch (error) {
    prependError(`Notifications were not turned on. ${problem(error)}`);
    return;
  }
  if (kind) {
    state.device = { ...state.device, pushProblem: kind };
    await saveDevice(state.device);
    prependError(`Notifications were not turned on. ${problemText(kind, { onDevices: true })}`);
    return;
  }
  banner.hidden = true;
  schedulePoll();
  go("#devices", "Notifications are on: requests reach this phone even when the app is closed.");
}

/** On every open: push must reach this phone with the server's current VAPID key. */
async function keepSubscriptionCurrent() {
  if (!state.device?.endpoint) return;
  if (pushState() === "blocked") {
    banner.replaceChildren(
      screens.notice(
        "Notifications are off: new requests show up only while this app is open.",
        "warn",
      ),
      h("button", { type: "button", class: "secondary", onclick: enableNotifications }, "Turn on"),
    );
    banner.hidden = false;
    return;
  }
  banner.hidden = true;
  const registration = await workerRegistration();
  const config = await api.getConfig();
  if (!registration || !config.vapid_public_key) return;
  try {
    state.device = await syncSubscription(registration, state.device, config.vapid_public_key);
  } catch (error) {
    if (error instanceof api.ApiError) throw error;
    const kind = subscribeProblem(error);
    state.device = { ...state.device, endpoint: null, vapidKey: null, pushProblem: kind };
    await saveDevice(state.device);
    if (state.view?.name === "list") render();
  }
}

async function enableNotifications() {
  const permission = await askPermission();
  if (permission !== "granted") {
    banner.replaceChildren(screens.notice(problemText("denied"), "warn"));
    return;
  }
  keepSubscriptionCurrent().catch(reportBackground);
}

function reportBackground(error) {
  banner.replaceChildren(screens.notice(problem(error), "error"));
  banner.hidden = false;
}

/** Fetch the pending requests and bring the screen in line, without moving the focus. */
async function refresh() {
  if (!state.device) return;
  const before = new Map(state.requests);
  await fetchRequests();
  const added = [...state.requests.values()].filter((request) => !before.has(request.ref));
  const removed = [...before.keys()].filter((ref) => !state.requests.has(ref));
  if (added.length === 1) announce(`New request from ${added[0].client_name}.`);
  else if (added.length > 1) announce(`${added.length} new requests.`);
  const view = state.view || {};
  if (view.name === "list" && (added.length > 0 || removed.length > 0)) {
    showList([...state.requests.values()], { quiet: true });
  } else if (view.name === "request" && removed.includes(view.ref)) {
    const who = before.get(view.ref)?.client_name;
    go("", `The request from ${who ?? "that service"} is no longer waiting for an answer.`);
  }
}

function pollDelay() {
  return pushState() === "on" ? POLL_WITH_PUSH : POLL_WITHOUT_PUSH;
}

/** The next look at the pending requests; only while the app is visible and online. */
function schedulePoll(delay = pollDelay()) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, delay);
}

async function poll() {
  if (state.device && document.visibilityState === "visible" && navigator.onLine) {
    try {
      await refresh();
      if (banner.dataset.kind === "poll") banner.hidden = true;
    } catch (error) {
      reportBackground(error);
      banner.dataset.kind = "poll";
    }
  }
  schedulePoll();
}

async function onWorkerMessage(event) {
  const message = event.data || {};
  const view = state.view || {};
  if (message.type === "open") return go(`#request=${encodeURIComponent(message.ref)}`);
  if (message.type === "subscription") {
    // The worker renewed (or lost) the push subscription.
    state.device = (await loadDevice()) ?? null;
    if (view.name === "devices" || view.name === "list") render();
    return;
  }
  if (message.type === "dismiss" || message.type === "decided") {
    const request = state.requests.get(message.ref);
    state.requests.delete(message.ref);
    showCount();
    if (view.name === "request" && view.ref === message.ref) {
      const who = request ? `The request from ${request.client_name}` : "That request";
      return go("", `${who} is no longer waiting for an answer.`);
    }
    if (view.name === "list") showList([...state.requests.values()], { quiet: true });
    return;
  }
  if (message.type === "prompt") refresh().catch(reportBackground);
}

function onTick() {
  const expired = screens.tick(main);
  if (expired.size === 0) return;
  const view = state.view || {};
  if (view.name === "request" && expired.has(view.ref)) {
    const request = state.requests.get(view.ref);
    state.requests.delete(view.ref);
    showCount();
    return go("", `The request from ${request?.client_name ?? "that service"} expired.`);
  }
  if (view.name === "list") {
    for (const ref of expired) {
      main.querySelector(`li[data-ref="${CSS.escape(ref)}"]`)?.remove();
      state.requests.delete(ref);
    }
    showCount();
    if (!main.querySelector("li[data-ref]")) render();
  }
}

function onConnectivity() {
  if (navigator.onLine) {
    if (banner.dataset.kind === "offline") banner.hidden = true;
    announce("You're back online.");
    if (state.device) poll();
    return;
  }
  banner.replaceChildren(
    screens.notice(
      "You're offline. Requests you approve or deny can't be sent until you're back online.",
      "warn",
    ),
  );
  banner.dataset.kind = "offline";
  banner.hidden = false;
  announce("You're offline.");
}

async function start() {
  if (!globalThis.indexedDB) {
    main.replaceChildren(screens.notice(problemText("no_storage"), "error"));
    return;
  }
  if (navigator.serviceWorker) {
    const options = { type: "module", scope: "./", updateViaCache: "none" };
    registering = navigator.serviceWorker.register("sw.js", options);
    registering.catch(() => {}); // a refusal reads as "no service worker" where it matters
    navigator.serviceWorker.addEventListener("message", onWorkerMessage);
    navigator.serviceWorker.startMessages();
  }
  window.addEventListener("hashchange", () => render());
  window.addEventListener("online", onConnectivity);
  window.addEventListener("offline", onConnectivity);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.device) schedulePoll(0);
  });
  setInterval(onTick, 1000);
  state.device = (await loadDevice()) ?? null;
  await render();
  if (!navigator.onLine) onConnectivity();
  if (state.device && !navigator.serviceWorker) {
    banner.replaceChildren(screens.notice(problemText("no_worker"), "warn"));
    banner.hidden = false;
  } else {
    keepSubscriptionCurrent().catch(reportBackground);
  }
  if (state.device) schedulePoll();
}

start();
