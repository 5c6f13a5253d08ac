// What the user saw, bound into the decision (docs/device-api.md): the `shown` digest
// every decision signs, and the WebAuthn challenge of an approval with user verification.
import { b64urlEncode, utf8 } from "./encoding.js";

// Versioned domain separation: a later layout gets a new version.
const UV_DOMAIN = "backchannel-uv/1";

function scopeText(scope) {
  return Array.isArray(scope) ? scope.join(" ") : scope || "";
}

// base64url(SHA-256(UTF-8(JSON.stringify([ref, client_name, binding_message, scope]))))
// with binding_message "" when absent and scope the space-joined scope string; a request
// with authorization_details adds a fifth element, their canonical JSON text.
export async function shownDigest({ ref, client_name, binding_message, scope, authorization_details }) {
  const shown = [ref, client_name, binding_message || "", scopeText(scope)];
  if (authorization_details != null) shown.push(canonicalJson(authorization_details));
  return b64urlEncode(await crypto.subtle.digest("SHA-256", utf8(JSON.stringify(shown))));
}

/**
 * JSON with sorted keys and no whitespace: RFC 8785 for what the device API carries
 * (strings, integers within ±2^53, booleans, null, arrays, objects). `sort()` orders keys
 * by UTF-16 code units, as RFC 8785 and the server do.
 */
export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const members = Object.keys(value)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalJson(value[key])}`);
    return `{${members.join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

/**
 * The challenge of an approval's fingerprint, face or PIN check: SHA-256 of the canonical
 * JSON of what is approved, as this phone shows it (PSD2 dynamic linking). The request's
 * `challenge` is the server's nonce; authorization_details are null when the request has none.
 */
export async function uvChallenge(request) {
  const input = [
    UV_DOMAIN,
    "approve",
    request.ref,
    request.client_id,
    request.client_name,
    request.binding_message || "",
    scopeText(request.scope),
    request.authorization_details ?? null,
    request.challenge,
  ];
  return new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(canonicalJson(input))));
}
