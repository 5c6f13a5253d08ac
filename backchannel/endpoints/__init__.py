"""Thin HTTP handlers: parse the request, call the protocol layer, render the answer."""
