"""The panel's pages: the login form and the agent's desk.

The desk has the form that starts a verification, the current attempt with
its live status (an ``aria-live`` region the page's script updates from the
event stream), and the agent's attempts with their outcomes. Every state the
script can reveal is rendered here too, so a reload shows what an update did.
"""

from __future__ import annotations

from datetime import datetime

from examples.call_centre.attempts import Attempt, Status
from examples.call_centre.binding import REASONS, done_label
from examples.call_centre.csrf import FIELD
from examples.call_centre.markup import Html, attribute_if, html, join
from examples.call_centre.sessions import Session
from examples.call_centre.wording import LABELS, clock, method, reason_label, sentence

TITLE = "Caller verification"


def _csrf(session: Session) -> Html:
    return html(
        '<input type="hidden" name="{name}" value="{token}">', name=FIELD, token=session.csrf_token
    )


def _time(at: datetime, text: str | None = None, field: str = "") -> Html:
    return html(
        '<time datetime="{iso}"{field}>{text}</time>',
        iso=at.isoformat(),
        field=html(' data-field="{f}"', f=field) if field else Html(""),
        text=text or clock(at),
    )


NOTHING = Html("")


def _page(title: str, body: Html, *, topbar: Html = NOTHING) -> Html:
    return html(
        """<!doctype html>
<html lang="en-GB">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/panel.css">
<script type="module" src="/static/panel.js"></script>
</head>
<body>
<a class="skip" href="#main">Skip to the main content</a>
{topbar}
<main id="main" tabindex="-1">
{body}
</main>
</body>
</html>
""",
        title=title,
        topbar=topbar,
        body=body,
    )


def login_page(session: Session, *, login: str = "", error: str | None = None) -> Html:
    alert = (
        html('<p class="notice error" role="alert" id="login-error">{e}</p>', e=error)
        if error
        else Html("")
    )
    body = html(
        """<div class="login-card card">
<h1><span class="mark" aria-hidden="true"></span>{title}</h1>
<p class="muted">Internal tool for support agents. Log in with your agent account.</p>
{alert}
<form method="post" action="/login" class="stack">
{csrf}
<label for="login">Login name</label>
<input id="login" name="login" autocomplete="username" autocapitalize="none"
 spellcheck="false" required value="{login}"{described}>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 required{described}>
<button type="submit" class="primary">Log in</button>
</form>
</div>""",
        title=TITLE,
        alert=alert,
        csrf=_csrf(session),
        login=login,
        described=Html(' aria-describedby="login-error"') if error else Html(""),
    )
    return _page(f"Log in · {TITLE}", html('<div class="login">{b}</div>', b=body))


def _topbar(session: Session) -> Html:
    assert session.agent is not None
    return html(
        """<header class="topbar">
<a class="brand" href="/"><span class="mark" aria-hidden="true"></span>{title}</a>
<div class="who">Logged in as <strong>{name}</strong> <span class="muted">({login})</span></div>
<form method="post" action="/logout">{csrf}
<button type="submit" class="quiet">Log out</button></form>
</header>""",
        title=TITLE,
        name=session.agent.name,
        login=session.agent.login,
        csrf=_csrf(session),
    )


def desk_page(
    session: Session,
    attempts: list[Attempt],
    current: Attempt | None,
    *,
    caller_text: str = "",
    reason: str = "password-reset",
    error: str | None = None,
) -> Html:
    body = html(
        """<h1 class="visually-hidden">{title}</h1>
<div class="desk">
{form}
{current}
</div>
{history}""",
        title=TITLE,
        form=_new_attempt_form(session, caller_text, reason, error),
        current=_current(session, current),
        history=_history(attempts, current),
    )
    title = f"{LABELS[current.status]} · {TITLE}" if current is not None else TITLE
    return _page(title, body, topbar=_topbar(session))


def _new_attempt_form(session: Session, caller_text: str, reason: str, error: str | None) -> Html:
    options = join(
        html(
            '<option value="{value}"{selected}>{label}</option>',
            value=value,
            label=label,
            selected=attribute_if(value == reason, "selected"),
        )
        for value, label in REASONS.items()
    )
    described = "caller-help caller-error" if error else "caller-help"
    return html(
        """<section class="card new" aria-labelledby="new-title">
<h2 id="new-title">Verify a caller</h2>
<form method="post" action="/attempts" class="stack">
{csrf}
<label for="caller">Caller's email, phone or account number</label>
<input id="caller" name="caller" required autocomplete="off" spellcheck="false"
 value="{caller}" aria-describedby="{described}"{invalid}{autofocus}>
<p class="help" id="caller-help">Phone numbers with the country code, e.g. +44 7700 900123.</p>
{error}
<label for="reason">Reason for the call</label>
<select id="reason" name="reason">{options}</select>
<button type="submit" class="primary">Send to the caller's phone</button>
</form>
</section>""",
        csrf=_csrf(session),
        caller=caller_text,
        described=described,
        invalid=Html(' aria-invalid="true"') if error else Html(""),
        autofocus=attribute_if(error is not None, "autofocus"),
        error=(
            html('<p class="field-error" id="caller-error">{e}</p>', e=error) if error else Html("")
        ),
        options=options,
    )


def _current(session: Session, attempt: Attempt | None) -> Html:
    if attempt is None:
        return Html(
            '<section class="card current empty" aria-labelledby="current-title">'
            '<h2 id="current-title">Current verification</h2>'
            '<p class="muted">Start a verification: its status shows here as the caller '
            "answers on their phone.</p></section>"
        )
    identity = attempt.identity
    done = attempt.done_at is not None
    return html(
        """<section class="card current" id="current" aria-labelledby="current-title"
 data-attempt="{id}" data-status="{status}">
<h2 id="current-title">{reason} for {caller}</h2>
<dl class="facts">
<div><dt>Read-back code</dt><dd><span class="code">{code}</span></dd></div>
<div><dt>Started</dt><dd>{started}</dd></div>
<div class="expiry"{expiry_hidden}><dt>Expires</dt><dd>{expires}</dd></div>
</dl>
<p class="preview">The caller's phone shows <q>{message}</q>.
Ask them to read you the code before they approve.</p>
<div class="status" role="status" aria-live="polite" aria-atomic="true">
<span class="badge" data-status="{status}">{label}</span>
<span class="sentence">{sentence}</span>
</div>
<div class="identity"{identity_hidden}>
<h3>Verified identity</h3>
<dl class="facts">
<div><dt>Subject</dt><dd data-field="subject">{subject}</dd></div>
<div><dt>Name</dt><dd data-field="name">{name}</dd></div>
<div><dt>Verified at</dt><dd>{verified_at}</dd></div>
<div><dt>Method</dt><dd data-field="method">{method}</dd></div>
</dl>
<form method="post" action="/attempts/{id}/done" class="done-form"{form_hidden}>
{csrf}
<button type="submit" class="primary">Mark “{done_label}”</button>
</form>
<p class="done-note"{note_hidden}><strong>{done_label}.</strong> Confirmed at {done_at}.</p>
</div>
</section>""",
        id=attempt.id,
        status=attempt.status.value,
        reason=reason_label(attempt),
        caller=attempt.caller.value,
        code=attempt.code,
        started=_time(attempt.started_at),
        expiry_hidden=attribute_if(attempt.status.final or attempt.expires_at is None, "hidden"),
        expires=(
            _time(attempt.expires_at, field="expires_at")
            if attempt.expires_at is not None
            else Html("")
        ),
        message=attempt.binding_message,
        label=LABELS[attempt.status],
        sentence=sentence(attempt),
        identity_hidden=attribute_if(identity is None, "hidden"),
        subject=identity.subject if identity else "",
        name=(identity.name or "(not given)") if identity else "",
        verified_at=(
            _time(identity.verified_at, field="verified_at")
            if identity
            else html('<time data-field="verified_at"></time>')
        ),
        method=method(identity) if identity else "",
        form_hidden=attribute_if(done or attempt.status is not Status.VERIFIED, "hidden"),
        note_hidden=attribute_if(not done, "hidden"),
        done_label=done_label(attempt.reason),
        done_at=(
            _time(attempt.done_at)
            if attempt.done_at
            else html('<time data-field="done_at"></time>')
        ),
        csrf=_csrf(session),
    )


def _history(attempts: list[Attempt], current: Attempt | None) -> Html:
    if not attempts:
        rows = Html("")
        empty = Html('<p class="muted" id="no-attempts">No attempts yet.</p>')
    else:
        current_id = current.id if current is not None else None
        rows = join(_row(a, a.id == current_id) for a in attempts)
        empty = Html("")
    return html(
        """<section class="card history" aria-labelledby="history-title">
<h2 id="history-title">Your attempts</h2>
{empty}
<table{table_hidden}>
<thead><tr><th scope="col">Started</th><th scope="col">Caller</th><th scope="col">Reason</th>
<th scope="col">Code</th><th scope="col">Outcome</th></tr></thead>
<tbody>{rows}</tbody>
</table>
</section>""",
        empty=empty,
        table_hidden=attribute_if(not attempts, "hidden"),
        rows=rows,
    )


def _row(attempt: Attempt, is_current: bool) -> Html:
    done = html(' <span class="done-mark">· {d}</span>', d=done_label(attempt.reason))
    return html(
        """<tr data-attempt="{id}"{current}>
<td>{started}</td>
<td><a href="/attempts/{id}">{caller}</a> <span class="kind">{kind}</span></td>
<td>{reason}</td>
<td><span class="code small">{code}</span></td>
<td class="outcome"><span class="badge" data-status="{status}">{label}</span>{done}</td>
</tr>""",
        id=attempt.id,
        current=Html(' aria-current="true"') if is_current else Html(""),
        started=_time(attempt.started_at),
        caller=attempt.caller.value,
        kind=attempt.caller.kind_label,
        reason=reason_label(attempt),
        code=attempt.code,
        status=attempt.status.value,
        label=LABELS[attempt.status],
        done=done if attempt.done_at is not None else Html(""),
    )


def message_page(title: str, text: str, *, link: str = "/", link_text: str = "Back") -> Html:
    """A plain page for refusals (403, 404)."""
    body = html(
        '<div class="login"><div class="card login-card"><h1>{title}</h1><p>{text}</p>'
        '<p><a href="{link}">{link_text}</a></p></div></div>',
        title=title,
        text=text,
        link=link,
        link_text=link_text,
    )
    return _page(f"{title} · {TITLE}", body)
