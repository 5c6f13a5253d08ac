// What this browser is, in words a device list can show: "Chrome on Android", "Safari on iPhone".
// Only a suggestion for the device's name: the user can change it before setting up.

const BRANDS = [
  ["Microsoft Edge", "Edge"],
  ["Opera", "Opera"],
  ["Brave", "Brave"],
  ["Samsung Internet", "Samsung Internet"],
  ["Google Chrome", "Chrome"],
  ["Chromium", "Chromium"],
];

const PLATFORMS = {
  Android: "Android",
  "Chrome OS": "ChromeOS",
  "Chromium OS": "ChromeOS",
  iOS: "iPhone",
  Linux: "Linux",
  macOS: "Mac",
  Windows: "Windows",
};

// Order matters: Edge, Opera and Samsung Internet also say "Chrome"; Chrome also says "Safari".
const BROWSER_PATTERNS = [
  [/EdgA?\/|EdgiOS\//, "Edge"],
  [/OPR\/|OPT\/|Opera/, "Opera"],
  [/SamsungBrowser\//, "Samsung Internet"],
  [/Firefox\/|FxiOS\//, "Firefox"],
  [/CriOS\/|Chrome\//, "Chrome"],
  [/Chromium\//, "Chromium"],
  [/Safari\//, "Safari"],
];

const OS_PATTERNS = [
  [/Android/, "Android"],
  [/iPhone|iPod/, "iPhone"],
  [/iPad/, "iPad"],
  [/CrOS/, "ChromeOS"],
  [/Windows/, "Windows"],
  [/Macintosh|Mac OS X/, "Mac"],
  [/Linux|X11/, "Linux"],
];

function first(patterns, text) {
  return patterns.find(([pattern]) => pattern.test(text))?.[1] ?? null;
}

/** From User-Agent Client Hints where the browser has them (Chromium), else the UA string. */
export function describeBrowser(userAgent, hints = null) {
  const brands = (hints?.brands ?? []).map((b) => b.brand);
  const brand = BRANDS.find(([name]) => brands.includes(name))?.[1];
  if (brand && PLATFORMS[hints.platform]) return `${brand} on ${PLATFORMS[hints.platform]}`;
  const browser = first(BROWSER_PATTERNS, userAgent);
  const os = first(OS_PATTERNS, userAgent);
  if (browser && os) return `${browser} on ${os}`;
  return browser ?? "My phone";
}

export function deviceName() {
  return describeBrowser(navigator.userAgent, navigator.userAgentData ?? null);
}
