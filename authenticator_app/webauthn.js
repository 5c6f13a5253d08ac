// Fingerprint, face or PIN on this phone (WebAuthn, docs/device-api.md "User verification"):
// registering a key for this device, and the check Approve runs when a request needs it.
// Only the page uses this module: navigator.credentials does not exist in a service worker.
import * as api from "./api.js";
import { uvChallenge } from "./digest.js";
import { b64urlDecode, b64urlEncode } from "./encoding.js";

const TIMEOUT = 120_000;

/** Whether this browser can do WebAuthn at all. */
export function supported() {
  return typeof PublicKeyCredential === "function" && Boolean(navigator.credentials);
}

/** A user cancelling, or the authenticator not verifying them, both read NotAllowedError. */
export function notConfirmed(error) {
  return error?.name === "NotAllowedError" || error?.name === "AbortError";
}

function descriptor({ id, type = "public-key", transports }) {
  return { id: b64urlDecode(id), type, ...(transports?.length ? { transports } : {}) };
}

// The server's JSON options (base64url for bytes) as the browser wants them.
function creationOptions(options) {
  return {
    ...options,
    challenge: b64urlDecode(options.challenge),
    user: { ...options.user, id: b64urlDecode(options.user.id) },
    excludeCredentials: (options.excludeCredentials ?? []).map(descriptor),
  };
}

function b64(buffer) {
  return buffer ? b64urlEncode(buffer) : null;
}

// A credential as the server's JSON: its common fields, and `response` (the ceremony's own
// fields, already encoded).
function credentialJson(credential, response) {
  return {
    id: credential.id,
    rawId: b64(credential.rawId),
    type: credential.type,
    authenticatorAttachment: credential.authenticatorAttachment ?? null,
    clientExtensionResults: credential.getClientExtensionResults(),
    response: { clientDataJSON: b64(credential.response.clientDataJSON), ...response },
  };
}

function registrationJson(credential) {
  const response = credential.response;
  return credentialJson(credential, {
    attestationObject: b64(response.attestationObject),
    transports: typeof response.getTransports === "function" ? response.getTransports() : [],
  });
}

function assertionJson(credential) {
  const response = credential.response;
  return credentialJson(credential, {
    authenticatorData: b64(response.authenticatorData),
    signature: b64(response.signature),
    userHandle: b64(response.userHandle),
  });
}

/**
 * Ask the server for registration options ahead of the tap that uses them: some browsers
 * (Safari) only run a WebAuthn ceremony started straight from the user's tap, not after
 * a network round trip. The options stay usable for five minutes.
 */
export function prepareRegistration(device = null) {
  const options = api.deviceCall("webauthn/register-options", {}, device);
  options.catch(() => {}); // reported when used
  return options;
}

/** Register a fingerprint, face or PIN key for this device; the server's new WebAuthn state. */
export async function register(device = null, prepared = null) {
  const { publicKey } = await (prepared ?? prepareRegistration(device));
  const credential = await navigator.credentials.create({ publicKey: creationOptions(publicKey) });
  const answer = await api.deviceCall(
    "webauthn/register",
    { credential: registrationJson(credential) },
    device,
  );
  return answer.webauthn;
}

/**
 * The user's fingerprint, face or PIN check for approving `request`, with one of this
 * device's keys (`state` is the pending list's `webauthn`): the assertion, as JSON.
 * `challenge` may be computed ahead (`uvChallenge`), so the ceremony starts at the tap.
 */
export async function verifyUser(request, state, challenge = null) {
  const credential = await navigator.credentials.get({
    publicKey: {
      challenge: challenge ?? (await uvChallenge(request)),
      rpId: state.rp_id,
      allowCredentials: state.credentials.map(descriptor),
      userVerification: "required",
      timeout: TIMEOUT,
    },
  });
  return assertionJson(credential);
}
