// base64url (RFC 4648 §5, no padding) and UTF-8 helpers shared by the page and the worker.

export function utf8(text) {
  return new TextEncoder().encode(text);
}

export function b64urlEncode(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let binary = "";
  for (const byte of view) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function b64urlDecode(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export function b64urlJson(value) {
  return b64urlEncode(utf8(JSON.stringify(value)));
}

export function randomId(byteCount = 16) {
  return b64urlEncode(crypto.getRandomValues(new Uint8Array(byteCount)));
}
