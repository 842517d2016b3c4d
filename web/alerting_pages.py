"""Alerting pages: alerts, silences, rules, the rule editor (validate, diff, save, history), login.

``AlertingViews`` is what the CLI hands over: the evaluator's status (``RuleManager.status``
shape), the ``Silences`` API, the ``RuleStore`` (editable files and their errors), the
reload hook of the alerter and a history directory. Changing anything needs a login
(``web.auth.Auth``) and a CSRF token on the form.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from alerting.template import format_alert_value
from web.auth import USER_KEY, Auth, safe_next
from web.common import ADD_USER_HELP, AUTH, render
from web.rule_history import RuleHistory, digest, unified_diff
from web.timerange import parse_duration_s

if TYPE_CHECKING:
    from alerting.evaluator import RuleManager

log = logging.getLogger("ringmon.web.alerting")

ALERTING: web.AppKey[AlertingViews] = web.AppKey("alerting_views")
SILENCE_DURATIONS = ("30m", "1h", "2h", "4h", "8h", "12h", "1d", "3d", "7d")
MAX_RULE_TEXT = 1_000_000  # characters a save may hold; validation and writing run in a worker thread
STATE_ORDER = {"firing": 0, "pending": 1}


@dataclass
class AlertingViews:
    """The alerting parts the pages read and change; any of them may be absent."""

    rules_status: Callable[[], Awaitable[list[dict]]] | None = None  # RuleManager.status() shape
    silences: Any = None  # alerting.notifier.silences.Silences
    rule_store: Any = None  # alerting.rulestore.RuleStore: editable files and their errors
    reload_rules: Callable[[], Awaitable[Any]] | None = None  # RuleManager.reload -> ReloadReport
    history_dir: str | Path | None = None

    @classmethod
    def from_parts(
        cls,
        *,
        manager: RuleManager | None = None,
        silences: Any = None,
        rule_store: Any = None,
        history_dir: str | Path | None = None,
    ) -> AlertingViews:
        """Views over an in-process ``RuleManager`` (status and reload), ``Silences`` and rules."""

        async def status() -> list[dict]:
            assert manager is not None  # handed out only with a manager (below)
            return manager.status()

        return cls(
            rules_status=status if manager is not None else None,
            silences=silences,
            rule_store=rule_store if rule_store is not None else getattr(manager, "rules", None),
            reload_rules=manager.reload if manager is not None else None,
            history_dir=history_dir,
        )

    def editable_files(self) -> list[str]:
        if self.rule_store is None:
            return []
        return [p for p in self.rule_store.expand_paths() if "*" not in p]

    @property
    def history(self) -> RuleHistory | None:
        return RuleHistory(self.history_dir) if self.history_dir else None


def _views(request: web.Request) -> AlertingViews:
    return request.app[ALERTING]


def _auth(request: web.Request) -> Auth | None:
    auth = request.app.get(AUTH)
    return auth if auth is not None and auth.enabled else None


def _login_url(request: web.Request) -> str:
    return "/login?" + urlencode({"next": request.path_qs})


def require_user_for_page(request: web.Request) -> str:
    """The logged-in user, or a redirect to the login page (or 403 when logins are not set up)."""
    if _auth(request) is None:
        raise web.HTTPForbidden(text=f"Editing is disabled. {ADD_USER_HELP}")
    user = request.get(USER_KEY)
    if not user:
        raise web.HTTPSeeOther(_login_url(request))
    return str(user)  # the auth middleware stores the name


async def require_user_for_post(request: web.Request) -> tuple[str, Mapping[str, str]]:
    """Login and CSRF checks for a form POST; returns the user and the form."""
    auth = _auth(request)
    if auth is None:
        raise web.HTTPForbidden(text=f"Editing is disabled. {ADD_USER_HELP}")
    form = await request.post()
    auth.check_csrf(request, form)
    user = request.get(USER_KEY)
    if not user:
        raise web.HTTPForbidden(text="You need to log in to do that.")
    return user, {k: str(v) for k, v in form.items() if isinstance(v, str)}


# -- alerts and rules ----------------------------------------------------------------------------


async def _status(request: web.Request) -> tuple[list[dict], str]:
    views = _views(request)
    if views.rules_status is None:
        return [], "Rule evaluation is not running in this process."
    try:
        return list(await views.rules_status()), ""
    except Exception as exc:
        log.exception("rules status failed")
        return [], f"rule status unavailable: {type(exc).__name__}: {exc}"


def _alert_value(raw: Any, templates: Any) -> str:
    """The value as the rule's annotations print it (see ``format_alert_value``)."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return str(raw)
    return format_alert_value(value, templates)


async def alerts_page(request: web.Request) -> web.Response:
    groups, err = await _status(request)
    views = _views(request)
    muted: dict[int, list[str]] = {}
    alerts = []
    for g in groups:
        for r in g.get("rules", []):
            if r.get("type") != "alerting":
                continue
            for a in r.get("alerts", []):
                labels = dict(a.get("labels") or {})
                alerts.append(
                    {
                        "name": r.get("name", labels.get("alertname", "")),
                        "state": a.get("state", ""),
                        "active_at": a.get("activeAt") or None,
                        "labels": labels,
                        "annotations": dict(a.get("annotations") or {}),
                        "value": _alert_value(a.get("value", ""), (r.get("annotations") or {}).values()),
                        "raw_value": a.get("value", ""),
                        "group": g.get("name", ""),
                    }
                )
    if views.silences is not None:
        try:
            await views.silences.refresh()
            for a in alerts:
                ids = views.silences.muted_by(a["labels"])
                if ids:
                    muted[id(a)] = ids
        except Exception as exc:
            log.exception("silence check failed")
            err = err or f"silences unavailable: {type(exc).__name__}: {exc}"
    state = request.query.get("state", "")
    shown = [a for a in alerts if not state or a["state"] == state]
    shown.sort(key=lambda a: (STATE_ORDER.get(a["state"], 9), a["name"], -(a["active_at"] or 0)))
    for a in shown:
        a["silenced_by"] = muted.get(id(a), [])
        a["silence_matchers"] = ", ".join(f'{k}="{_q(v)}"' for k, v in sorted(a["labels"].items()))
    return render(
        request,
        "alerts.html",
        page_title="Alerts",
        alerts=shown,
        firing=sum(1 for a in alerts if a["state"] == "firing"),
        pending=sum(1 for a in alerts if a["state"] == "pending"),
        state_filter=state,
        errors=[err] if err else [],
    )


def _q(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def rules_page(request: web.Request) -> web.Response:
    groups, err = await _status(request)
    views = _views(request)
    file_errors: dict[str, list[str]] = {}
    store = views.rule_store
    if store is not None:
        if getattr(store, "changed_on_disk", None) is not None and store.changed_on_disk():
            store.apply(await _off_loop(store.read))  # re-read a changed file in a worker thread
        for path, errs in store.errors().items():
            file_errors[path] = [str(e) for e in errs]
    groups = sorted(groups, key=lambda g: (g.get("file", ""), g.get("name", "")))
    return render(
        request,
        "rules.html",
        page_title="Rules",
        groups=groups,
        file_errors=file_errors,
        files=views.editable_files(),
        errors=[err] if err else [],
    )


# -- silences ------------------------------------------------------------------------------------


async def silences_page(request: web.Request, *, form_error: str = "", form: Mapping[str, str] | None = None,
                        status: int = 200) -> web.Response:  # fmt: skip
    views = _views(request)
    if views.silences is None:
        raise web.HTTPNotFound(text="Silences are not available in this process.")
    now = time.time()
    items = await views.silences.list(include_expired=True)
    show_expired = request.query.get("expired") == "1"
    rows = [
        {"silence": s, "state": s.state(now), "matchers": s.describe()}
        for s in items
        if show_expired or s.state(now) != "expired"
    ]
    rows.sort(key=lambda r: ({"active": 0, "pending": 1}.get(r["state"], 2), -r["silence"].ends_at))
    f = dict(form or {})
    f.setdefault("matchers", request.query.get("matchers", ""))
    f.setdefault("duration", "2h")
    f.setdefault("comment", "")
    return render(
        request,
        "silences.html",
        status=status,
        page_title="Silences",
        rows=rows,
        show_expired=show_expired,
        durations=SILENCE_DURATIONS,
        form=f,
        form_error=form_error,
        login_url=_login_url(request),
    )


async def silences_view(request: web.Request) -> web.Response:
    return await silences_page(request)


async def silence_create(request: web.Request) -> web.Response:
    user, form = await require_user_for_post(request)
    from alerting.notifier.silences import SilenceError, new_silence

    views = _views(request)
    try:
        duration = parse_duration_s(form.get("duration", ""))
        silence = new_silence(form.get("matchers", ""), user, form.get("comment", ""), duration_s=duration)
    except (SilenceError, ValueError) as exc:
        return await silences_page(request, form_error=str(exc), form=form, status=422)
    await views.silences.add(silence)
    log.info("silence created", extra={"silence": silence.id, "user": user, "matchers": silence.describe()})
    raise web.HTTPSeeOther("/silences")


async def silence_expire(request: web.Request) -> web.Response:
    user, _ = await require_user_for_post(request)
    from alerting.notifier.silences import SilenceError

    try:
        s = await _views(request).silences.expire(request.match_info["id"])
    except SilenceError as exc:
        return await silences_page(request, form_error=str(exc), status=422)
    log.info("silence expired", extra={"silence": s.id, "user": user})
    raise web.HTTPSeeOther("/silences")


# -- rule editor ---------------------------------------------------------------------------------


def _rule_file(request: web.Request, path: str) -> str:
    files = _views(request).editable_files()
    if path not in files:
        raise web.HTTPBadRequest(text=f"{path!r} is not one of the configured rule files.")
    return path


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def _numbered(text: str, errors: list[Any]) -> list[dict]:
    by_line: dict[int, list[str]] = {}
    for e in errors:
        by_line.setdefault(int(getattr(e, "line", 0) or 0), []).append(str(getattr(e, "reason", e)))
    return [
        {"n": i, "text": line, "errors": by_line.get(i, [])}
        for i, line in enumerate(text.split("\n"), start=1)
    ]


def _editor(
    request: web.Request, *, path: str, text: str, base: str, status: int = 200, **extra: Any
) -> web.Response:
    extra.setdefault("rule_errors", [])
    extra.setdefault("diff", [])
    extra.setdefault("saved", None)
    extra.setdefault("conflict", False)
    extra.setdefault("save_error", "")
    extra.setdefault("loaded_version", "")
    return render(
        request,
        "rule_edit.html",
        status=status,
        page_title=f"Edit {Path(path).name}",
        file_path=path,
        text=text,
        base=base,
        numbered=_numbered(text, extra["rule_errors"]) if extra["rule_errors"] else [],
        **extra,
    )


async def rule_edit_view(request: web.Request) -> web.Response:
    require_user_for_page(request)
    path = _rule_file(request, request.query.get("file", ""))
    current = await _off_loop(_read, path)
    text = current
    version = request.query.get("version", "")
    history = _views(request).history
    if version:
        if history is None:
            raise web.HTTPNotFound(text="No rule history is kept.")
        try:
            text = history.read(path, version)
        except KeyError:
            raise web.HTTPNotFound(text=f"There is no version {version!r} of {path}.") from None
    diff = await _off_loop(unified_diff, current, text, Path(path).name) if version else []
    return _editor(request, path=path, text=text, base=digest(current), diff=diff, loaded_version=version)


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking or CPU-heavy editor work (read, validate, diff, write) in a worker thread."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def rule_edit_post(request: web.Request) -> web.Response:
    user, form = await require_user_for_post(request)
    views = _views(request)
    path = _rule_file(request, form.get("file", ""))
    text = form.get("text", "").replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > MAX_RULE_TEXT:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_RULE_TEXT, actual_size=len(text),
            text=f"Not saved: {len(text)} characters, over the rule editor's limit of {MAX_RULE_TEXT}.")
    action = form.get("action", "preview")
    from alerting.rulestore import RuleFileWriteError, validate_rule_text, write_rule_file_atomically

    options = getattr(views.rule_store, "options", None)
    kwargs = {"options": options} if options is not None else {}
    errors = await _off_loop(lambda: validate_rule_text(text, path, **kwargs))
    current = await _off_loop(_read, path)
    if errors:
        return _editor(
            request, path=path, text=text, base=form.get("base", ""), rule_errors=errors, status=422
        )
    diff = await _off_loop(unified_diff, current, text, Path(path).name)
    if form.get("base", "") != digest(current):
        # Someone saved the file after this editor opened it: show what changed, ask again.
        return _editor(
            request, path=path, text=text, base=digest(current), diff=diff, conflict=True, status=409
        )
    if action != "save":
        return _editor(request, path=path, text=text, base=digest(current), diff=diff)
    if text == current:
        return _editor(request, path=path, text=text, base=digest(current), saved={"unchanged": True})
    history = views.history

    def save() -> Any:
        from alerting.rulestore import save_target

        save_target(path)  # refuse before keeping a version of a file we will not write
        kept = history.record(path, current, user) if history is not None and current else None
        write_rule_file_atomically(path, text, validate=False)  # validated above, same options
        return kept

    try:
        version = await _off_loop(save)
    except (RuleFileWriteError, OSError) as exc:
        return _editor(request, path=path, text=text, base=digest(current), diff=diff, status=409,
                       save_error=str(exc))
    log.info(
        "rule file saved", extra={"path": path, "user": user, "previous_version": getattr(version, "id", "")}
    )
    report_text, reload_error = "", ""
    if views.reload_rules is not None:
        try:
            report = await views.reload_rules()
            failed = getattr(report, "failed", {}) or {}
            if path in failed:
                reload_error = "; ".join(str(e) for e in failed[path])
            report_text = report.summary() if hasattr(report, "summary") else str(report)
        except Exception as exc:
            log.exception("rule reload failed")
            reload_error = f"{type(exc).__name__}: {exc}"
    saved = {
        "unchanged": False,
        "version": getattr(version, "id", ""),
        "report": report_text,
        "reload_error": reload_error,
        "reloaded": views.reload_rules is not None and not reload_error,
    }
    return _editor(request, path=path, text=text, base=digest(text), saved=saved, diff=diff)


async def rule_history_page(request: web.Request) -> web.Response:
    require_user_for_page(request)
    path = _rule_file(request, request.query.get("file", ""))
    history = _views(request).history
    versions = history.versions(path) if history is not None else []
    version = request.query.get("version", "")
    shown = ""
    if version and history is not None:
        try:
            shown = history.read(path, version)
        except KeyError:
            raise web.HTTPNotFound(text=f"There is no version {version!r} of {path}.") from None
    return render(
        request,
        "rule_history.html",
        page_title=f"History of {Path(path).name}",
        file_path=path,
        versions=versions,
        version=version,
        shown=shown,
        history_enabled=history is not None,
    )


# -- login ---------------------------------------------------------------------------------------


def _redirect(location: str) -> web.Response:
    """A 303 to a local path, as a response (so cookies can be set on it)."""
    return web.Response(status=303, headers={"Location": location})


async def login_view(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    return render(
        request,
        "login.html",
        status=status,
        page_title="Log in",
        next_url=safe_next(request.query.get("next")),
        login_error=error,
        logins_enabled=_auth(request) is not None,
    )


async def login_post(request: web.Request) -> web.Response:
    auth = _auth(request)
    if auth is None:
        raise web.HTTPForbidden(text=f"Logins are disabled. {ADD_USER_HELP}")
    form = await request.post()
    auth.check_csrf(request, form)
    user = str(form.get("username", "")).strip()[:256]
    password = str(form.get("password", ""))
    result = await auth.login(user, password, auth.client_address(request))
    if not isinstance(result, bool):  # seconds to wait
        return await login_view(
            request, error=f"Too many failed logins; try again in {int(result) + 1} s.", status=429
        )
    if not user or not result:
        log.warning("login failed", extra={"user": user[:64], "remote": auth.client_address(request)})
        return await login_view(request, error="Wrong user name or password.", status=401)
    response = _redirect(safe_next(str(form.get("next", ""))))
    await auth.start_session(response, user)
    log.info("login", extra={"user": user})
    return response


async def logout_post(request: web.Request) -> web.Response:
    auth = _auth(request)
    if auth is None:
        raise web.HTTPSeeOther("/")
    form = await request.post()
    auth.check_csrf(request, form)
    response = _redirect("/")
    await auth.end_session(request, response)
    return response


def add_alerting_routes(app: web.Application, views: AlertingViews) -> list[tuple[str, str]]:
    """Mount the alerting pages; returns their navigation entries."""
    app[ALERTING] = views
    app.router.add_get("/alerts", alerts_page, name="alerts")
    app.router.add_get("/rules", rules_page, name="rules")
    app.router.add_get("/rules/edit", rule_edit_view, name="rule_edit")
    app.router.add_post("/rules/edit", rule_edit_post)
    app.router.add_get("/rules/history", rule_history_page, name="rule_history")
    nav = [("/alerts", "Alerts")]
    if views.silences is not None:
        app.router.add_get("/silences", silences_view, name="silences")
        app.router.add_post("/silences", silence_create)
        app.router.add_post("/silences/{id}/expire", silence_expire)
        nav.append(("/silences", "Silences"))
    nav.append(("/rules", "Rules"))
    return nav


def add_login_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_view, name="login")
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", logout_post, name="logout")
