"""`editkit serve`: the OpenAI HTTP API over an `EditableLM`, plus endpoints for its edits.

- `POST /v1/chat/completions` and `POST /v1/completions`: OpenAI's request and response shapes,
  `stream: true` as server-sent events ending in `data: [DONE]`, `usage` counts. The answer comes
  from the same path as `EditableLM.ask`: the retrieval policy places the tenant's edits, and
  `EditableLM.generate_batched` / `stream_batched` decode: every request, streamed or not,
  joins the one running batch as it arrives (continuous batching), greedy or sampled
  (`temperature`, with `seed`). Chat messages go through the model's chat template (when it
  has one); a completion's prompt is continued as raw text.
- `POST /v1/edits` (`{"facts": [...], "on_update": ...}`; a fact is a string or
  `{"text", "key", "subject", "relation", "object"}`; the answer lists what each new edit
  superseded, 409 `edit_conflict` under `refuse`), `GET /v1/edits` (`?history=1`: superseded
  edits too; `?as_of=`: those live then), `DELETE /v1/edits/{id}` (what it had superseded is
  live again: `restored`), `DELETE /v1/edits`: the tenant's edits, in the same memory the SDK
  uses. Completions take `as_of` (ISO 8601 or epoch seconds) to answer as of that time.
- Tenancy: `keys` maps API keys (`Authorization: Bearer <key>`) to namespaces; a key only ever
  reads and writes its own namespace. Without keys the server is open and uses the default
  namespace.
- Errors are 4xx JSON in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`).

Needs `editkit[serve]` (FastAPI, uvicorn). FastAPI reads the endpoints' annotations, so its
names are imported at module level (this module is only imported to serve).
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .editable import EditableLM
from .errors import (
    EditConflictError,
    EditkitError,
    EditNotFoundError,
    EngineError,
    EngineUnavailableError,
    MemoryUnavailableError,
)
from .limits import MAX_NEW_TOKENS
from .records import DEFAULT_NAMESPACE, FactInput

__all__ = ["create_app", "serve_in_thread"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields editkit does not use
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = None  # sampled requests: the same seed gives the same answer
    stop: str | list[str] | None = None
    stream: bool = False
    # editkit's own: answer with the edits live at this time (ISO 8601 or epoch seconds)
    as_of: datetime | float | None = None

    def budget(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 64

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Sampling):
    prompt: str


class EditsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    facts: list[str | FactInput] = Field(min_length=1)  # a dict: text, key, triple
    on_update: Literal["latest", "keep-both", "refuse"] | None = None  # None: the server's


class HTTPError(Exception):
    """An error answered as OpenAI does: status code and `{"error": {...}}`."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code


def edit_json(e: Any) -> dict[str, Any]:
    """An edit as the API shows it: its slot and, for history, what replaced it."""
    return {"id": e.id, "text": e.text, "created_at": e.created_at, "key": e.key,
            "subject": e.subject, "relation": e.relation, "object": e.object,
            "live": e.superseded_by is None, "superseded_by": e.superseded_by,
            "superseded_at": e.superseded_at, "supersedes": list(e.supersedes)}


def create_app(lm: EditableLM, keys: dict[str, str] | None = None) -> Any:
    """The ASGI app. `keys`: API key -> namespace (None: no authentication, default
    namespace)."""
    app = FastAPI(title="editkit", version="1")

    def error(status: int, message: str, type_: str = "invalid_request_error",
              code: str | None = None) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {
            "message": message, "type": type_, "param": None, "code": code}})

    @app.exception_handler(HTTPError)
    async def _http_error(_: Request, exc: HTTPError) -> JSONResponse:
        return error(exc.status, exc.message, exc.type, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return error(400, f"Invalid request: {where}: {first.get('msg', 'bad value')}")

    @app.exception_handler(EditkitError)
    async def _editkit_error(_: Request, exc: EditkitError) -> JSONResponse:
        # The engine or the memory's database down: 503, a retry can succeed; the engine
        # refusing a request: 502; the caller's input: 400 (404 for an unknown edit).
        if isinstance(exc, EditConflictError):  # on_update='refuse' met a stored value
            return JSONResponse(status_code=409, content={"error": {
                "message": str(exc), "type": "invalid_request_error", "param": "facts",
                "code": "edit_conflict",
                "conflicts": [edit_json(e) for e in exc.conflicts]}})
        status = (404 if isinstance(exc, EditNotFoundError) else
                  503 if isinstance(exc, (EngineUnavailableError, MemoryUnavailableError)) else
                  502 if isinstance(exc, EngineError) else 400)
        return error(status, str(exc))

    def namespace(request: Request) -> str:
        if keys is None:
            return DEFAULT_NAMESPACE
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if key not in keys:
            raise HTTPError(401, "Incorrect API key provided.", "invalid_request_error",
                            "invalid_api_key")
        return keys[key]

    # A conversation goes through the model's chat template (an instruct model answers a
    # question there, and inline often says nothing); /v1/completions continues raw text.
    # A model built with chat=False / chat=True keeps that choice on both endpoints.
    chat_turns = lm.chat is not False and lm.has_chat_template
    raw_text = lm.chat is True

    def start(ns: str, question: str, history: Sequence[tuple[str, str]], req: _Sampling, *,
              chat: bool, stream: bool = False) -> tuple[Any, Any]:
        """The request's prompt (the tenant's edits placed by the retrieval policy) and its
        generation, a row of the running batch. The prompt is built inside `arriving()`: an
        idle batch waits for requests sent together to be built, so they are prefilled
        together."""
        with lm.engine.arriving():
            p, _, _ = lm.prompt(question, namespace=ns, history=history, chat=chat,
                                max_new_tokens=req.budget(), as_of=req.as_of)
            gen = (lm.stream_batched if stream else lm.generate_batched)(
                p, max_new_tokens=req.budget(), stop=req.stops(),
                temperature=req.temperature or None, seed=req.seed, namespace=ns)
        return p, gen

    def usage(p: Any, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": len(p), "completion_tokens": completion_tokens,
                "total_tokens": len(p) + completion_tokens}

    def sse(chunks: Iterator[dict[str, Any]]) -> StreamingResponse:
        def body() -> Iterator[str]:
            for c in chunks:
                yield f"data: {json.dumps(c)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(body(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest, request: Request) -> Any:
        ns = namespace(request)
        turns = [(m.role if m.role != "developer" else "system", m.content) for m in req.messages]
        if turns[-1][0] != "user":
            raise HTTPError(400, "The last message must be from the user.")
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        model = req.model or lm.name
        if req.stream:
            p, gen = start(ns, turns[-1][1], turns[:-1], req, chat=chat_turns, stream=True)

            def chunks() -> Iterator[dict[str, Any]]:
                base = {"id": rid, "object": "chat.completion.chunk", "created": created,
                        "model": model}
                yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                            "finish_reason": None}]}
                with gen:
                    for piece in gen:
                        yield {**base, "choices": [{"index": 0, "delta": {"content": piece},
                                                    "finish_reason": None}]}
                yield {**base, "choices": [{"index": 0, "delta": {},
                                            "finish_reason": gen.finish_reason}],
                       "usage": usage(p, gen.completion_tokens)}
            return sse(chunks())
        p, g = start(ns, turns[-1][1], turns[:-1], req, chat=chat_turns)
        return {"id": rid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                             "finish_reason": g.finish_reason}],
                "usage": usage(p, g.completion_tokens)}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest, request: Request) -> Any:
        ns = namespace(request)
        if req.stream:
            raise HTTPError(400, "stream is supported on /v1/chat/completions only.")
        p, g = start(ns, req.prompt, (), req, chat=raw_text)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": req.model or lm.name,
                "choices": [{"index": 0, "text": g.text, "finish_reason": g.finish_reason,
                             "logprobs": None}],
                "usage": usage(p, g.completion_tokens)}

    @app.post("/v1/edits")
    def add_edits(req: EditsRequest, request: Request) -> Any:
        facts = [f if isinstance(f, str) else f.model_dump() for f in req.facts]
        added = lm.add_edits(facts, namespace=namespace(request),  # all or none, one tx
                             on_update=req.on_update)
        return {"object": "list", "data": [edit_json(e) for e in added],
                "superseded": [i for e in added for i in e.supersedes]}

    @app.get("/v1/edits")
    def list_edits(request: Request, history: bool = False,
                   as_of: datetime | float | None = None) -> Any:
        """The tenant's live edits; ?history=1 adds superseded ones; ?as_of= those live then."""
        found = lm.edits(namespace(request), history=history, as_of=as_of)
        return {"object": "list", "data": [edit_json(e) for e in found]}

    @app.delete("/v1/edits/{edit_id}")
    def forget(edit_id: str, request: Request) -> Any:
        gone = lm.forget(edit_id, namespace(request))  # another tenant's id is not found (404)
        # a live edit's forgetting makes what it superseded live again
        return {"id": edit_id, "deleted": True,
                "restored": list(gone.supersedes) if gone.superseded_by is None else []}

    @app.delete("/v1/edits")
    def clear(request: Request) -> Any:
        return {"deleted": lm.clear(namespace(request))}

    @app.get("/v1/models")
    def models() -> Any:
        return {"object": "list", "data": [{"id": lm.name, "object": "model",
                                            "owned_by": "editkit"}]}

    return app


def serve_in_thread(lm: EditableLM, keys: dict[str, str] | None = None,
                    host: str = "127.0.0.1") -> tuple[Any, str]:
    """Start the app with uvicorn in a daemon thread on a free port; returns the server (set
    `should_exit = True` to stop it) and its base URL. Tests and `editkit bench serve_load`
    use it."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(lm, keys), host=host, port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    for _ in range(400):  # up to 20 s
        if server.started:
            break
        time.sleep(0.05)
    return server, f"http://{host}:{port}"
