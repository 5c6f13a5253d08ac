// Plain words for what a request asks for, and for times.

const SCOPE_WORDS = {
  openid: "Confirm it's you",
  profile: "See your name and profile",
  email: "See your email address",
  phone: "See your phone number",
  address: "See your postal address",
  offline_access: "Stay connected after you leave",
};

/** One plain sentence per requested scope; unknown scopes are shown as they are. */
export function scopeWords(scope) {
  const list = Array.isArray(scope) ? scope : String(scope || "").split(" ");
  return list.filter(Boolean).map((item) => SCOPE_WORDS[item] ?? `Other access: "${item}"`);
}

const DECISION_WORDS = {
  approve: "Approved",
  approved: "Approved",
  deny: "Denied",
  denied: "Denied",
  not_me: "Denied: this wasn't me",
};

export function decisionWords(decision) {
  return DECISION_WORDS[decision] ?? decision;
}

/** "4:05" for 245 seconds; "0:00" once past. */
export function clock(seconds) {
  const whole = Math.max(0, Math.ceil(seconds));
  const minutes = Math.floor(whole / 60);
  return `${minutes}:${String(whole % 60).padStart(2, "0")}`;
}

export function when(isoTime) {
  const date = new Date(isoTime);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/**
 * "just now", "2 min ago", "3 hours ago", "yesterday", "4 days ago", then the date.
 * A time slightly ahead of this phone's clock reads "just now".
 */
export function ago(isoTime, now = Date.now()) {
  const date = new Date(isoTime);
  if (Number.isNaN(date.getTime())) return "";
  const seconds = Math.max(0, (now - date.getTime()) / 1000);
  if (seconds < 45) return "just now";
  const minutes = Math.max(1, Math.round(seconds / 60));
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return hours === 1 ? "1 hour ago" : `${hours} hours ago`;
  const days = Math.floor(hours / 24);
  if (days === 1) return "yesterday";
  if (days < 7) return `${days} days ago`;
  return date.toLocaleDateString(undefined, { dateStyle: "medium" });
}

/** Up to two letters for an avatar: "AC" for "Acme Coffee", "家" for "家族 👩‍👩‍👧". */
export function initials(name) {
  const letters = String(name ?? "")
    .split(/\s+/)
    .map((word) => word.match(/[\p{L}\p{N}]/u)?.[0])
    .filter(Boolean);
  if (letters.length === 0) return "?";
  return letters
    .slice(0, 2)
    .join("")
    .toLocaleUpperCase();
}

/** One of a few avatar colours, always the same for the same name. */
export function hue(name) {
  // FNV-1a over the code points.
  let hash = 0x811c9dc5;
  for (const char of String(name ?? "")) {
    hash ^= char.codePointAt(0);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  // Mix the high bits down: FNV's low bits depend only on the characters' low bits.
  hash = Math.imul(hash ^ (hash >>> 16), 0x45d9f3b) >>> 0;
  return ((hash ^ (hash >>> 16)) >>> 0) % 8;
}
