// The `shown` digest of docs/device-api.md: what the user saw, bound into the decision.
import { b64urlEncode, utf8 } from "./encoding.js";

// base64url(SHA-256(UTF-8(JSON.stringify([ref, client_name, binding_message, scope]))))
// with binding_message "" when absent and scope the space-joined scope string.
export async function shownDigest({ ref, client_name, binding_message, scope }) {
  const scopeText = Array.isArray(scope) ? scope.join(" ") : scope || "";
  const text = JSON.stringify([ref, client_name, binding_message || "", scopeText]);
  return b64urlEncode(await crypto.subtle.digest("SHA-256", utf8(text)));
}
