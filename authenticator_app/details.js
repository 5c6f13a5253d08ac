// What a request's authorization_details (RFC 9396) show: a payment as a card the user can
// check against the till or the bank's screen, any other type as its fields, all of it as sent.
import { h } from "./dom.js";

/** "1 250.00" for "1250.00": thin-space thousands, the digits exactly as the request has them. */
export function groupedAmount(amount) {
  const [whole, fraction] = String(amount).split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009");
  return fraction === undefined ? grouped : `${grouped}.${fraction}`;
}

/** An IBAN in groups of four, as printed on cards and statements. */
export function groupedIban(iban) {
  return String(iban).replace(/(.{4})(?=.)/g, "$1 ");
}

/**
 * An IBAN with only its first four and last four characters showing, grouped as printed:
 * "DE89 •••• •••• •••• ••30 00". Enough to check against an invoice, not enough for anyone
 * looking over a shoulder to copy. What is approved (and signed) is the full IBAN.
 */
export function maskedIban(iban) {
  const compact = String(iban).replace(/\s+/g, "");
  if (compact.length <= 8) return groupedIban(compact);
  const hidden = "\u2022".repeat(compact.length - 8);
  return groupedIban(compact.slice(0, 4) + hidden + compact.slice(-4));
}

function account(creditorAccount = {}) {
  if (creditorAccount.iban) return maskedIban(creditorAccount.iban);
  const parts = [];
  if (creditorAccount.sortCode) parts.push(`Sort code ${creditorAccount.sortCode}`);
  if (creditorAccount.accountNumber) parts.push(`Account ${creditorAccount.accountNumber}`);
  return parts.join(" · ");
}

/** What a screen reader says for a masked IBAN, instead of a run of bullets. */
function ibanLabel(iban) {
  const compact = String(iban).replace(/\s+/g, "");
  if (compact.length <= 8) return null;
  return `IBAN starting ${compact.slice(0, 4)}, ending ${compact.slice(-4)}`;
}

function row(label, value, extra = {}) {
  return value ? [h("dt", {}, label), h("dd", extra, value)] : [];
}

function paymentCard(payment) {
  const { instructedAmount = {}, creditorName, creditorAccount } = payment;
  return h(
    "div",
    { class: "detail payment", dataset: { type: "payment_initiation" } },
    h("p", { class: "eyebrow" }, "Payment"),
    h(
      "p",
      { class: "amount" },
      h("span", { class: "value" }, groupedAmount(instructedAmount.amount)),
      " ",
      h("span", { class: "currency" }, instructedAmount.currency),
    ),
    h(
      "dl",
      {},
      row("To", creditorName, { class: "payee" }),
      row("Account", account(creditorAccount), {
        class: "account",
        "aria-label": creditorAccount?.iban ? ibanLabel(creditorAccount.iban) : null,
      }),
      row("BIC", creditorAccount?.bic),
      row("Reference", payment.remittanceInformationUnstructured, { class: "reference" }),
    ),
  );
}

/** [path, text] for every leaf of an entry other than its type, in the order sent. */
function leaves(value, path = []) {
  if (value !== null && typeof value === "object") {
    return Object.entries(value).flatMap(([key, inner]) =>
      path.length === 0 && key === "type" ? [] : leaves(inner, [...path, key]),
    );
  }
  return [[path.join(" › "), String(value)]];
}

function genericCard(entry) {
  return h(
    "div",
    { class: "detail other", dataset: { type: entry.type } },
    h("p", { class: "eyebrow" }, entry.type),
    h(
      "dl",
      {},
      leaves(entry).flatMap(([label, text]) => row(label || "value", text)),
    ),
  );
}

/** The cards of a request's details; nothing when it has none. */
export function detailCards(details) {
  if (!Array.isArray(details) || details.length === 0) return null;
  return h(
    "div",
    { class: "details" },
    details.map((entry) =>
      entry?.type === "payment_initiation" ? paymentCard(entry) : genericCard(entry),
    ),
  );
}

/** One line for a notification or the list of waiting requests: "Pay 80.00 EUR to Acme Coffee". */
export function summaryText(details) {
  if (!Array.isArray(details) || details.length === 0) return "";
  const [first] = details;
  const text =
    first?.type === "payment_initiation"
      ? `Pay ${groupedAmount(first.instructedAmount?.amount)} ${first.instructedAmount?.currency} ` +
        `to ${first.creditorName}`
      : String(first?.type);
  return details.length > 1 ? `${text} and ${details.length - 1} more` : text;
}

export function detailSummary(details) {
  const text = summaryText(details);
  return text ? h("span", { class: "detail-summary" }, text) : null;
}
