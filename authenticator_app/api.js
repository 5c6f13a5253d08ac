// The device API (docs/device-api.md): every call is a compact JWS (ES256) signed
// with this phone's non-extractable P-256 key. Used by the page and the service worker.
import { shownDigest } from "./digest.js";
import { b64urlEncode, b64urlJson, randomId, utf8 } from "./encoding.js";
import { loadDevice } from "./store.js";

const ECDSA = { name: "ECDSA", namedCurve: "P-256" };
const SIGN = { name: "ECDSA", hash: "SHA-256" };
// A decision is worth signing for one minute (the server accepts at most two).
const DECISION_LIFETIME = 60;

/** A refusal from the server: `status` is the HTTP status, `error` the wire code. */
export class ApiError extends Error {
  constructor(status, error, description) {
    super(description || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
  }

  /** 404/409: the request is unknown or no longer pending (decided, expired, withdrawn). */
  get requestGone() {
    return this.status === 404 || this.status === 409;
  }
}

// The API lives beside the app: <issuer>/authenticator/ -> <issuer>/device/...
function endpoint(name) {
  return new URL(`../device/${name}`, import.meta.url).href;
}

async function answer(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, body?.error, body?.error_description);
  }
  return body;
}

export async function getConfig() {
  return answer(await fetch(endpoint("config"), { cache: "no-store" }));
}

function now() {
  return Math.floor(Date.now() / 1000);
}

// WebCrypto's ECDSA signature is the raw r||s pair: exactly the JWS ES256 form.
async function compactJws(header, payload, privateKey) {
  const signingInput = `${b64urlJson(header)}.${b64urlJson(payload)}`;
  const signature = await crypto.subtle.sign(SIGN, privateKey, utf8(signingInput));
  return `${signingInput}.${b64urlEncode(signature)}`;
}

async function post(name, jws) {
  const response = await fetch(endpoint(name), {
    method: "POST",
    headers: { "Content-Type": "application/jose" },
    body: jws,
    cache: "no-store",
  });
  return answer(response);
}

function claims(issuer, name, extra) {
  return { htm: "POST", htu: `${issuer}/device/${name}`, iat: now(), jti: randomId(), ...extra };
}

/** A device call signed with the enrolled key; throws if this phone is not enrolled. */
export async function deviceCall(name, extra = {}, device = null) {
  const current = device || (await loadDevice());
  if (!current) throw new ApiError(401, "not_enrolled", "This phone is not set up.");
  const header = { alg: "ES256", typ: "bc-device+jwt", kid: current.deviceId };
  const payload = claims(current.issuer, name, extra);
  return post(name, await compactJws(header, payload, current.keyPair.privateKey));
}

/**
 * Enrol: generate a fresh non-extractable key pair and present its public half in a
 * self-signed JWS with the one-time code. Returns {answer, keyPair}.
 */
export async function enrol(issuer, { code, name, subscription }) {
  const keyPair = await crypto.subtle.generateKey(ECDSA, false, ["sign", "verify"]);
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", keyPair.publicKey);
  const header = { alg: "ES256", typ: "bc-enrol+jwt", jwk: { kty, crv, x, y } };
  const payload = claims(issuer, "enrol", { code, name, subscription });
  const result = await post("enrol", await compactJws(header, payload, keyPair.privateKey));
  return { answer: result, keyPair };
}

/**
 * Post approve / deny / not_me for a pending request as the user saw it; `number` is
 * the pick when the request uses number matching, `webauthn` the user verification
 * (a WebAuthn assertion, as JSON) of an approval that needs it.
 */
export async function decide(request, decision, number = null, webauthn = null) {
  return deviceCall("decision", {
    ref: request.ref,
    decision,
    shown: await shownDigest(request),
    challenge: request.challenge,
    exp: now() + DECISION_LIFETIME,
    ...(number === null ? {} : { number }),
    ...(webauthn === null ? {} : { webauthn }),
  });
}
