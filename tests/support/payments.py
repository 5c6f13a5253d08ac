"""A payment as a bank sends it in authorization_details (RFC 9396, payment_initiation)."""

from __future__ import annotations

from typing import Any

PAYMENT: dict[str, Any] = {
    "type": "payment_initiation",
    "actions": ["initiate"],
    "instructedAmount": {"currency": "EUR", "amount": "80.00"},
    "creditorName": "Acme Coffee",
    "creditorAccount": {"iban": "DE89370400440532013000"},
    "remittanceInformationUnstructured": "Order 4711",
}
