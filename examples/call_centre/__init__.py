"""A call-centre panel: a support agent verifies a caller on the caller's own phone.

The agent types the caller's email, phone number or account number and the
reason for the call; the panel asks the CIBA provider to authenticate that
user (``backchannel.rp``), with a binding message the caller reads back, and
shows the outcome live. docs/call-centre.md describes it; ``./scripts/dev``
runs it next to a local server.

One concept per module:

- ``config``: the panel's settings, from ``CALL_CENTRE_*`` variables;
- ``agents``: who may log in (argon2id password hashes);
- ``sessions``: the session cookie and its server-side sessions;
- ``csrf``: the token every form post carries, and the Origin check;
- ``forms``: reading url-encoded form posts;
- ``caller``: what the agent typed, as a typed ``login_hint``;
- ``binding``: call reasons, the read-back code and the binding message;
- ``attempts``: every verification attempt and the live feed of their changes;
- ``verification``: the CIBA flow itself, through ``backchannel.rp``;
- ``wording``: what each outcome is called on screen;
- ``markup`` and ``pages``: escaped HTML and the pages;
- ``live``: the server-sent event stream the page listens to;
- ``security_headers``: CSP and the other response headers;
- ``app``: routes and handlers; ``serve``: running it under hypercorn;
- ``dev``: the launcher ``./scripts/dev`` uses to start the panel next to the server.
"""
