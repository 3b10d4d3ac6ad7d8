"""`RemoteEngine`: editkit in front of a model that an inference engine serves.

The engine (vLLM, SGLang, TGI, llama.cpp's server, `transformers serve`) serves the output of
`editkit export --format hf`: the model whose vocabulary holds the P-Tokens as special tokens.
editkit keeps everything else client-side: the memory, retrieval and the relevance gate, the
prompt layout (the chat template included) and the escaping of user text. It sends the rendered
prompt to `/v1/completions` as text and reads the answer back as server-sent events.

Why text and an exactness check: OpenAI-compatible engines tokenize a text prompt themselves,
reading control-token strings (`<|im_end|>`, `<BEGIN_EDIT_0>`) as control tokens. editkit builds
the prompt as ids (user text with special tokens split, so a typed `<|im_end|>` stays characters),
renders it to text, and refuses to send a text whose tokenization is not exactly those ids: what
the engine reads is what the in-process model would read, or the call fails with a clear error.

Why the answer is cut here: editkit's stop rule (a stop counts after the answer's first non-blank
character; the text is stripped) differs from engines' `stop`. The answer streams in, the same
`TextAssembler` as in process cuts it, and the stream is closed as soon as it is cut, which tells
the engine to stop generating.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import httpx

from ..errors import (
    EngineCapabilityError,
    EngineError,
    EngineUnavailableError,
    InvalidInputError,
)
from ..layouts import Prompt
from .engine import GenerateOptions
from .generation import Generation
from .requests import FinishReason
from .text import TextAssembler

_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class RemoteEngine:
    """An OpenAI-compatible `/v1/completions` endpoint as editkit's engine.

    url: the API base, e.g. `http://127.0.0.1:8000/v1`. tokenizer: the export's tokenizer (the
    one the engine tokenizes with). model: the id to ask for (None: the only model the engine
    lists). timeout_s: per request, connecting and between streamed pieces; retries: attempts
    after a failed connection, before any answer text came back (nothing is retried once the
    engine has started answering); concurrency: requests in flight for `generate_many`.
    """

    kind = "remote"

    def __init__(self, url: str, tokenizer: Any, *, model: str | None = None,
                 context_length: int | None = None, timeout_s: float = 300.0,
                 retries: int = 2, concurrency: int = 16) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"engine must be an http(s) URL such as "
                                    f"http://127.0.0.1:8000/v1, not {url!r}.")
        self.url = url.rstrip("/")
        self.tokenizer = tokenizer
        self.retries, self.concurrency = retries, concurrency
        self._context_length = context_length
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s),
                                    limits=httpx.Limits(max_connections=concurrency + 4))
        self.model = model or self._only_model()

    # ---- the engine's side ------------------------------------------------------------------
    def models(self) -> list[str]:
        """The model ids the engine serves (`GET /v1/models`)."""
        body = self._request("GET", "/models").json()
        return [m.get("id", "") for m in body.get("data", [])]

    def _only_model(self) -> str:
        served = self.models()
        if len(served) != 1:
            raise EngineError(f"The engine at {self.url} serves {len(served)} models "
                              f"({', '.join(served) or 'none listed'}); name the one to use "
                              "(engine_model=...).")
        return served[0]

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One call with retries on connection failures; HTTP errors become typed errors."""
        for attempt in range(self.retries + 1):
            try:
                resp = self._client.request(method, self.url + path, **kw)
                break
            except _RETRYABLE as exc:
                if attempt == self.retries:
                    raise self._unavailable(exc) from exc
                time.sleep(0.2 * 2 ** attempt)
            except httpx.TimeoutException as exc:
                raise self._unavailable(exc) from exc
        _raise_for_status(resp)
        return resp

    def _unavailable(self, exc: Exception) -> EngineUnavailableError:
        return EngineUnavailableError(f"The engine at {self.url} cannot be reached "
                                      f"({type(exc).__name__}: {exc}); is it running? Retry once "
                                      "it answers; no edit was lost.")

    # ---- prompts ----------------------------------------------------------------------------
    def prompt_text(self, prompt: Prompt) -> str:
        """The text to send: the prompt's ids rendered, checked to tokenize back to them."""
        tok = self.tokenizer
        text = tok.decode(prompt.ids, skip_special_tokens=False,
                          clean_up_tokenization_spaces=False)
        bos = tok.bos_token_id
        again = list(tok(text).input_ids)
        if bos is not None and again[:2] == [bos, bos]:  # decode kept the BOS; tokenize adds it
            text = text[len(tok.bos_token):]
            again = again[1:]
        if again != list(prompt.ids):
            raise InvalidInputError(
                "This prompt would reach the engine as other tokens than editkit built (the "
                "question or a fact contains a control-token string such as '<|im_end|>', or text "
                "the tokenizer does not read back the same); remove it, or use the in-process "
                "engine, which never reads user text as control tokens.")
        return text

    @property
    def context_length(self) -> int | None:
        return self._context_length

    # ---- generation -------------------------------------------------------------------------
    def stream(self, prompt: Prompt, options: GenerateOptions, *,
               shared: bool = False) -> RemoteStream:
        return RemoteStream(self, self.prompt_text(prompt), options)

    def generate(self, prompt: Prompt, options: GenerateOptions, *,
                 shared: bool = False) -> Generation:
        s = self.stream(prompt, options)
        for _ in s:
            pass
        return s.result

    def generate_many(self, prompts: Sequence[Prompt], options: Sequence[GenerateOptions], *,
                      batch_size: int = 16) -> list[Generation]:
        """Concurrent requests (at most `batch_size` and `concurrency` in flight): the engine
        batches them as it batches any concurrent load."""
        texts = [self.prompt_text(p) for p in prompts]  # every prompt checked before any is sent

        def one(i: int) -> Generation:
            s = RemoteStream(self, texts[i], options[i])
            for _ in s:
                pass
            return s.result

        with ThreadPoolExecutor(max(1, min(batch_size, self.concurrency, len(prompts)))) as ex:
            return list(ex.map(one, range(len(prompts))))

    def arriving(self) -> AbstractContextManager[Any]:
        return nullcontext()  # the engine batches concurrent requests itself

    def score(self, requests: Sequence[tuple[Prompt, Sequence[Sequence[int]]]], *,
              forest_tokens: int | None = 4096) -> list[list[list[float]]]:
        raise EngineCapabilityError(
            f"score (and ES/PS/NS evaluation) needs the log-probabilities of prompt tokens; "
            f"editkit's remote engine does not read them from {self.url} (OpenAI's completions "
            "API returns them only with echo + logprobs, which this engine family does not "
            "offer uniformly). Score with the in-process engine: load the export without "
            "engine=.")

    def close(self) -> None:
        self._client.close()


class RemoteStream:
    """One streamed completion: text pieces cut by editkit's stop rule (the `TextStream` of the
    remote engine). The request is sent when the first piece is asked for."""

    def __init__(self, engine: RemoteEngine, text: str, options: GenerateOptions) -> None:
        self._engine, self._text, self._opts = engine, text, options
        self._assembler = TextAssembler(options.stop)
        self._raw = ""
        self._pieces: Iterator[str] | None = None
        self._closed = False
        self.result = Generation()

    @property
    def text(self) -> str:
        return self.result.text

    @property
    def completion_tokens(self) -> int:
        return self.result.completion_tokens

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.result.finish_reason

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._pieces is None:
            self._pieces = self._run()
        return next(self._pieces)

    def close(self) -> None:
        """Cancel: the connection is closed, which stops the engine's generation."""
        self._closed = True
        if self._pieces is not None:
            self._pieces.close()  # type: ignore[attr-defined]

    def __enter__(self) -> RemoteStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _body(self) -> dict[str, Any]:
        o = self._opts
        body: dict[str, Any] = {"model": self._engine.model, "prompt": self._text,
                                "max_tokens": o.max_new_tokens, "stream": True,
                                "stream_options": {"include_usage": True},
                                "temperature": 0.0 if o.temperature is None else o.temperature}
        if o.temperature is not None and o.seed is not None:
            body["seed"] = o.seed
        return body

    def _run(self) -> Iterator[str]:
        eng = self._engine
        reason: str | None = None
        usage: int | None = None
        for attempt in range(eng.retries + 1):
            try:
                with eng._client.stream("POST", eng.url + "/completions",
                                        json=self._body()) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        _raise_for_status(resp)
                    for chunk in _events(resp.iter_lines()):
                        if self._closed:
                            return
                        if chunk.get("usage") and not chunk.get("choices"):
                            usage = int(chunk["usage"].get("completion_tokens", 0)) or None
                            continue
                        choice = (chunk.get("choices") or [{}])[0]
                        piece = choice.get("text") or ""
                        self._raw += piece
                        out = self._assembler.feed(piece)
                        if out:
                            yield out
                        if self._assembler.stopped:
                            reason = "stop"
                            break
                        reason = choice.get("finish_reason") or reason
                break
            except _RETRYABLE as exc:
                if self._raw or attempt == eng.retries:  # never retry a half-given answer
                    raise eng._unavailable(exc) from exc
                time.sleep(0.2 * 2 ** attempt)
            except httpx.TimeoutException as exc:
                raise eng._unavailable(exc) from exc
        rest = self._assembler.finish()
        if rest:
            yield rest
        # The engine's own count where it sent one (`stream_options.include_usage`), else
        # counted here with the export's tokenizer plus the end-of-sequence token.
        n = usage if usage is not None else (
            len(eng.tokenizer(self._raw, add_special_tokens=False).input_ids)
            + (reason == "stop" and not self._assembler.stopped))
        self.result = Generation(text=self._assembler.text, completion_tokens=n,
                                 finish_reason="length" if reason == "length" else "stop")


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of server-sent events, up to `[DONE]`; an error event raises."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError as exc:
            raise EngineError(f"The engine sent an event that is not JSON: {data[:200]!r}"
                              ) from exc
        if "error" in event:
            err = event["error"]
            raise EngineError(f"The engine failed the request: "
                              f"{err.get('message', err) if isinstance(err, dict) else err}")
        yield event


def _raise_for_status(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        detail = resp.json()
        detail = detail.get("error", detail.get("detail", detail))
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
    except ValueError:
        detail = resp.text[:500]
    cls = EngineUnavailableError if resp.status_code in (502, 503, 504) else EngineError
    raise cls(f"The engine answered {resp.status_code}: {detail}")
