"""The review web app: runs, leaderboard, traces, diffs, labels, pairwise choices, the active-learning queue.

Pages are rendered on the server (Jinja2, autoescaped: answers and prompts are untrusted text); forms post and
redirect back, so every action works without JavaScript. ``create_app(token=...)`` requires the token on
every request (``?token=`` once, which sets a cookie, or the ``X-Taskfit-Token`` / ``Authorization: Bearer``
header); without one, only requests for a loopback host are served (taskfit.netguard). Every POST must show
it comes from this app's own pages, and request bodies are limited to ``max_body_bytes``.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from taskfit import review
from taskfit.compare import compare, run_results
from taskfit.errors import TaskfitError
from taskfit.netguard import HostGuard, origin_host
from taskfit.store import RunRecord

if TYPE_CHECKING:
    from taskfit.workspace import Workspace

TOKEN_COOKIE = "taskfit_token"
TOKEN_HEADER = "x-taskfit-token"
QUEUE_PAGE = 25  # queue items shown at once: label these, the page reorders the rest
MAX_BODY_BYTES = 1_000_000  # the largest form here is a label with a comment

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else ""
templates.env.filters["num"] = lambda v, d=3: "" if v is None else f"{v:.{d}f}"
templates.env.filters["pct"] = lambda v: "" if v is None else f"{v:.0%}"
templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=str)


def create_app(workspace: Workspace, token: str | None = None, allowed_hosts: Sequence[str] = (),
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The web app over the runs and labels in ``workspace``; ``token`` guards every request.

    Without a token only loopback hosts and ``allowed_hosts`` are served; with one, ``allowed_hosts`` still
    restricts the Host when given.
    """
    app = FastAPI(title="taskfit review", docs_url=None, redoc_url=None, openapi_url=None,
                  max_body_size=max_body_bytes)
    store = workspace.runs

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token:
            given = (
                request.headers.get(TOKEN_HEADER)
                or _bearer(request)
                or request.cookies.get(TOKEN_COOKIE)
                or request.query_params.get("token")
                or ""
            )
            if not hmac.compare_digest(given.encode(), token.encode()):
                return PlainTextResponse(
                    "taskfit ui: a token is required (open the URL `taskfit ui` printed)", 401
                )
            if request.query_params.get("token"):  # first visit: move the token into a cookie, out of the URL
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                resp = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), 303)
                resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
                return resp
        if request.method == "POST" and not _same_origin(request):
            return PlainTextResponse("taskfit ui: form posts must come from this app's pages (the Origin or "
                                     "Referer header, or Sec-Fetch-Site: same-origin)", 403)
        return await call_next(request)

    if token is None or allowed_hosts:
        app.add_middleware(HostGuard, allowed=allowed_hosts,
                           refuse=lambda message: PlainTextResponse(f"taskfit ui: {message}", 403))

    @app.exception_handler(TaskfitError)
    async def taskfit_error(request: Request, exc: TaskfitError):
        return templates.TemplateResponse(request, "error.html", {"message": str(exc)}, status_code=400)

    def run_or_404(run_id: str) -> RunRecord:
        run = store.get(run_id)
        if run is None:
            raise HTTPException(404, f"no run (or more than one) matches {run_id!r}")
        return run

    @app.get("/", response_class=HTMLResponse)
    def runs_page(request: Request):
        runs = store.list(500)
        lab_by_task: dict[str, dict] = {}
        rows = []
        for r in runs:
            lab = lab_by_task.setdefault(r.task_name, review.labels(store.eng, r.task_name))
            preds = store.predictions(r.id, with_trace=False)
            hs = review.human_score(preds, lab)
            rows.append({"run": r, "done": len(preds), "human": hs})
        return templates.TemplateResponse(request, "runs.html", {"rows": rows, "studies": _studies(runs)})

    @app.get("/leaderboard", response_class=HTMLResponse)
    def leaderboard_page(request: Request, study: str | None = None):
        from taskfit.leaderboard import rows as board_rows
        from taskfit.leaderboard import verdict

        runs = store.list(2000)
        studies = _studies(runs)
        if not studies:
            return templates.TemplateResponse(
                request, "leaderboard.html", {"studies": [], "study": None, "rows": []}
            )
        study = study or studies[0]["study"]
        reused = store.reused_in(study)
        chosen = [r for r in runs if r.study == study or r.id in reused]
        if not chosen:
            raise HTTPException(404, f"no study {study!r}")
        table = board_rows(workspace, chosen)
        lab = review.labels(store.eng, chosen[0].task_name)
        human = {r.run_id: review.human_score(store.predictions(r.run_id, with_trace=False), lab) for r in table}
        return templates.TemplateResponse(
            request,
            "leaderboard.html",
            {
                "studies": studies,
                "study": study,
                "task": chosen[0].task_name,
                "rows": table,
                "human": human,
                "tune_lines": {r.run_id: tune_summary(r.tune) for r in table},
                "verdict": verdict(table),
                "runs": chosen,
            },
        )

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str, show: str = "all"):
        run = run_or_404(run_id)
        preds = store.predictions(run.id, with_trace=False)
        lab = review.labels(store.eng, run.task_name)
        verdicts = {p.example_id: review.verdict_for(lab, p.example_id, p.answer) for p in preds}
        counts = {
            "correct": sum(v == "correct" for v in verdicts.values()),
            "incorrect": sum(v == "incorrect" for v in verdicts.values()),
            "unreviewed": sum(v is None for v in verdicts.values()),
        }
        human = review.human_score(preds, lab)
        if show == "unreviewed":
            preds = [p for p in preds if verdicts[p.example_id] is None]
        elif show == "wrong":
            preds = [p for p in preds if p.score < 1]
        others = [
            r
            for r in store.list(500)
            if r.task_name == run.task_name and r.split == run.split and r.id != run.id
        ]
        return templates.TemplateResponse(
            request,
            "run.html",
            {"run": run, "preds": preds, "verdicts": verdicts, "counts": counts, "show": show, "others": others,
             "human": human},
        )

    @app.get("/runs/{run_id}/examples/{example_id:path}", response_class=HTMLResponse)
    def example_page(request: Request, run_id: str, example_id: str):
        run = run_or_404(run_id)
        match = [p for p in store.predictions(run.id) if p.example_id == example_id]
        if not match:
            raise HTTPException(404, f"run {run.id} has no example {example_id!r}")
        p = match[0]
        lab = review.labels(store.eng, run.task_name)
        found = lab.get((example_id, review.label_key(p.answer)))
        return templates.TemplateResponse(request, "example.html", {"run": run, "p": p, "label": found})

    @app.get("/diff", response_class=HTMLResponse)
    def diff_page(request: Request, a: str, b: str, only: str = "all"):
        ra, rb = run_or_404(a), run_or_404(b)
        if ra.task_name != rb.task_name:
            raise TaskfitError(
                f"runs {ra.id} and {rb.id} are on different tasks ({ra.task_name!r}, {rb.task_name!r})"
            )
        pa = {p.example_id: p for p in store.predictions(ra.id, with_trace=False)}
        pb = {p.example_id: p for p in store.predictions(rb.id, with_trace=False)}
        shared = [e for e in pa if e in pb]
        picked = {
            (c["example_id"], c["run_id"], c["other_run_id"]): c["verdict"]
            for c in review.choices(store.eng, ra.task_name)
        }
        lab = review.labels(store.eng, ra.task_name)
        rows = []
        for e in shared:
            differ = review.label_key(pa[e].answer) != review.label_key(pb[e].answer)
            rows.append(
                {
                    "id": e,
                    "a": pa[e],
                    "b": pb[e],
                    "differ": differ,
                    "choice": picked.get((e, ra.id, rb.id)),
                    "va": review.verdict_for(lab, e, pa[e].answer),
                    "vb": review.verdict_for(lab, e, pb[e].answer),
                }
            )
        rows.sort(key=lambda r: not r["differ"])  # stable: answers that differ first, in data order
        if only == "differ":
            rows = [r for r in rows if r["differ"]]
        wins = {k: sum(r["choice"] == k for r in rows) for k in review.CHOICES}
        # the paired test, the difference's CI and the flips, as `taskfit diff A B` prints them
        comparison = compare(run_results(workspace, ra), run_results(workspace, rb)) if shared else None
        return templates.TemplateResponse(
            request,
            "diff.html",
            {
                "a": ra,
                "b": rb,
                "rows": rows,
                "n_shared": len(shared),
                "n_differ": sum(r["differ"] for r in rows),
                "only": only,
                "wins": wins,
                "comparison": comparison,
            },
        )

    @app.get("/queue", response_class=HTMLResponse)
    def queue_page(
        request: Request, task: str | None = None, study: str | None = None, run: str | None = None
    ):
        runs = store.list(2000)
        studies = [s for s in _studies(runs) if not task or s["task"] == task]
        if not studies:
            return templates.TemplateResponse(
                request, "queue.html", {"studies": [], "items": [], "task": task}
            )
        study = study or studies[0]["study"]
        reused = store.reused_in(study)
        chosen = [r for r in runs if r.study == study or r.id in reused]
        if not chosen:
            raise HTTPException(404, f"no study {study!r}")
        task = chosen[0].task_name
        lab = review.labels(store.eng, task)
        preds = {r.id: store.predictions(r.id) for r in chosen}
        items = review.order_queue(review.gather_evidence(preds, lab))
        by_run = {r.id: {p.example_id: p for p in preds[r.id]} for r in chosen}
        shown = []
        for it in [i for i in items if not i.labelled][:QUEUE_PAGE]:
            answers: dict[str, dict[str, Any]] = {}  # distinct answers, each with the runs that gave it
            first = None
            for r in chosen:
                p = by_run[r.id].get(it.example_id)
                if p is None:
                    continue
                first = first or p
                a = answers.setdefault(
                    review.label_key(p.answer),
                    {
                        "answer": p.answer,
                        "runs": [],
                        "verdict": review.verdict_for(lab, it.example_id, p.answer),
                    },
                )
                a["runs"].append(r)
            shown.append({"item": it, "p": first, "answers": list(answers.values())})
        scores = {r.id: review.human_score(preds[r.id], lab) for r in chosen}
        focus = run_or_404(run) if run else max(chosen, key=lambda r: (scores[r.id].labelled, r.created))
        history = review.ci_history(preds[focus.id], review.label_history(store.eng, task))
        return templates.TemplateResponse(
            request,
            "queue.html",
            {
                "studies": studies,
                "study": study,
                "task": task,
                "items": shown,
                "runs": chosen,
                "scores": scores,
                "focus": focus,
                "history": history,
                "chart": _ci_chart(history),
                "remaining": sum(not i.labelled for i in items),
                "total": len(items),
            },
        )

    @app.get("/export/preferences.jsonl")
    def export_preferences(task: str | None = None, labels: bool = True, download: bool = True):
        pairs = review.preference_pairs(store, task, from_labels=labels)
        body = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
        if not download:  # shown in the browser as text
            return PlainTextResponse(body)
        return Response(
            body,
            media_type="application/jsonl",
            headers={"Content-Disposition": attachment(f"preferences-{task or 'all'}.jsonl")},
        )

    @app.post("/label")
    def post_label(
        run_id: Annotated[str, Form()],
        example_id: Annotated[str, Form()],
        verdict: Annotated[str, Form()],
        comment: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/",
    ):
        review.add_label(store, run_or_404(run_id), example_id, verdict, comment)
        return RedirectResponse(_safe_next(next), 303)

    @app.post("/choice")
    def post_choice(
        run_a: Annotated[str, Form()],
        run_b: Annotated[str, Form()],
        example_id: Annotated[str, Form()],
        choice: Annotated[str, Form()],
        comment: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/",
    ):
        review.add_choice(store, run_or_404(run_a), run_or_404(run_b), example_id, choice, comment)
        return RedirectResponse(_safe_next(next), 303)

    @app.get("/api/counts/{run_id}")
    def counts(run_id: str) -> dict[str, Any]:
        run = run_or_404(run_id)
        preds = store.predictions(run.id, with_trace=False)
        hs = review.human_score(preds, review.labels(store.eng, run.task_name))
        return {
            "labelled": hs.labelled,
            "correct": hs.correct,
            "total": hs.total,
            "accuracy": hs.accuracy,
            "ci": list(hs.ci) if hs.labelled else None,
        }

    return app


def tune_summary(tune: dict[str, Any] | None) -> str:
    """One line about a fine-tuned model from whatever its leaderboard row's ``tune`` record holds."""
    if not tune:
        return ""
    t = {k: v for k, v in tune.items() if v is not None}
    parts = [t.get("method", "tuned") + (f" ({t['objective']})" if t.get("objective") else "")]
    if t.get("base_model"):
        parts.append(f"on {t['base_model']}")
    if "train_time_s" in t:
        parts.append(
            f"{t['train_time_s']:.0f} s training" + (f" on {t['device']}" if t.get("device") else "")
        )
    if "peak_mem_mb" in t:
        parts.append(f"{t['peak_mem_mb']:.0f} MB peak")
    if "trainable_pct" in t:
        parts.append(f"{t['trainable_pct']:.2f}% trainable")
    if "adapter_mb" in t:
        parts.append(f"{t['adapter_mb']:.1f} MB adapter")
    f = t.get("forgetting") or {}
    if f.get("score_before") is not None and f.get("score_after") is not None:
        parts.append(f"general score {f['score_before']:.3f} -> {f['score_after']:.3f}")
    return " · ".join(parts)


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else None


def _same_origin(request: Request) -> bool:
    """Whether a state-changing request shows it comes from this app's pages (against cross-site request
    forgery): its Origin, else its Referer, names this host; else the browser says Sec-Fetch-Site: same-origin.
    A request with none of the three is refused."""
    host = request.headers.get("host", "").lower()
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value is not None:
            return (origin_host(value) or "").lower() == host
    return request.headers.get("sec-fetch-site") == "same-origin"


def attachment(filename: str) -> str:
    """A Content-Disposition value for ``filename``: an ASCII fallback (no quote, slash or line break can
    reach the header) and the exact name percent-encoded as RFC 5987 ``filename*``."""
    fallback = re.sub(r"[^A-Za-z0-9._-]+", "_", filename)
    exact = re.sub(r"[\x00-\x1f\x7f/\\]", "_", filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(exact, safe='')}"


def _safe_next(target: str) -> str:
    """Redirect only within this app (a ``next`` of ``//evil.example`` would leave it)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _studies(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Studies (runs evaluated together), newest first, with their task and run count."""
    out: dict[str, dict[str, Any]] = {}
    for r in runs:  # runs come newest first
        s = out.setdefault(
            r.study,
            {"study": r.study, "task": r.task_name, "split": r.split, "created": r.created, "runs": 0},
        )
        s["runs"] += 1
    return list(out.values())


def _ci_chart(history: list[dict[str, float]], width: int = 560, height: int = 180) -> dict[str, Any] | None:
    """SVG coordinates for the accuracy and its CI band against the number of labels."""
    if not history:
        return None
    pad = 30
    n = len(history)
    x = lambda i: pad + (width - 2 * pad) * (i / max(1, n - 1))  # noqa: E731
    y = lambda v: height - pad - (height - 2 * pad) * v  # noqa: E731
    upper = [f"{x(i):.1f},{y(h['ci_high']):.1f}" for i, h in enumerate(history)]
    lower = [f"{x(i):.1f},{y(h['ci_low']):.1f}" for i, h in enumerate(history)]
    return {
        "width": width,
        "height": height,
        "pad": pad,
        "band": " ".join(upper + lower[::-1]),
        "line": " ".join(f"{x(i):.1f},{y(h['accuracy']):.1f}" for i, h in enumerate(history)),
        "y0": y(0),
        "y1": y(1),
        "y5": y(0.5),
        "n": n,
        "last": history[-1],
        "first": history[0],
    }
