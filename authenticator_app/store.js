// IndexedDB: the one place this phone keeps state (its device record and signing key).
// CryptoKey objects are stored as they are (structured clone); the private key is
// non-extractable, so neither the page nor anyone reading the database can copy it.

const DB_NAME = "backchannel-authenticator";
const STORE = "kv";
const DEVICE = "device";

let opening = null;

function openDb() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => {
        const db = request.result;
        // Another context upgrading the schema: step aside and reopen next time.
        db.onversionchange = () => {
          db.close();
          opening = null;
        };
        resolve(db);
      };
      request.onerror = () => {
        opening = null;
        reject(request.error);
      };
    });
  }
  return opening;
}

async function run(mode, action) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = action(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

/**
 * The enrolled device or undefined: {deviceId, name, displayName, account, issuer, keyPair,
 * endpoint, vapidKey, pushProblem}. `endpoint` is null when this phone has no push
 * subscription (`pushProblem` then says why, when known).
 */
export function loadDevice() {
  return run("readonly", (store) => store.get(DEVICE));
}

export function saveDevice(device) {
  return run("readwrite", (store) => store.put(device, DEVICE));
}

export function forgetDevice() {
  return run("readwrite", (store) => store.delete(DEVICE));
}

/** Whether this browser keeps what the app stores (some private windows keep nothing). */
export async function storageWorks() {
  if (!globalThis.indexedDB) return false;
  try {
    await run("readwrite", (store) => store.put(Date.now(), "probe"));
    await run("readwrite", (store) => store.delete("probe"));
    return true;
  } catch {
    return false;
  }
}
