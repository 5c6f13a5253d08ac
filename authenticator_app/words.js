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
