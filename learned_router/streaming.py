"""Streaming through the router: failover before the first chunk only, usage and cost at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from learned_router.errors import ProviderError
from learned_router.strategies.base import Features
from learned_router.types import ArmId, ChatRequest, Completion, Decision, StreamChunk, split_arm

if TYPE_CHECKING:
    from learned_router.router import Router

__all__ = ["AsyncRoutedStream", "RoutedStream"]


class _Collector:
    """Accumulates text and usage of the chunks relayed to the caller."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.finish: str | None = None

    def add(self, chunk: StreamChunk) -> None:
        self.text.append(chunk.text)
        if chunk.input_tokens is not None:
            self.input_tokens = chunk.input_tokens
        if chunk.output_tokens is not None:
            self.output_tokens = chunk.output_tokens
        self.finish = chunk.finish_reason or self.finish

    def usage(self, request: ChatRequest) -> tuple[str, int, int]:
        joined = "".join(self.text)
        # Providers that send no usage get the same chars/4 estimate the adapters use.
        in_tok = self.input_tokens if self.input_tokens is not None else max(1, len(request.prompt_text()) // 4)
        out_tok = self.output_tokens if self.output_tokens is not None else max(1, len(joined) // 4)
        return joined, in_tok, out_tok


class _StreamBase:
    def __init__(self, router: Router, req: ChatRequest, decision: Decision, features: Features) -> None:
        self.router = router
        self.request = req
        self.decision = decision
        self.features = features
        self.run = router._run(decision, req)
        self.completion: Completion | None = None
        self.served_arm: ArmId | None = None
        self._finished = False

    def _mid_stream_failure(self, err: ProviderError) -> None:
        self.run.failed(err)
        self._failed()

    def _failed(self) -> None:
        """Log the request as failed (once), e.g. cut mid-stream or abandoned by the caller."""
        if not self._finished:
            self._finished = True
            self.run.abandon()
            self.router._exhausted(self.run, self.features)

    def _done(self, acc: _Collector, client: Any) -> None:
        text, in_tok, out_tok = acc.usage(self.request)
        self._finished = True
        self.completion = self.router._served(self.run, self.features, text, acc.finish, in_tok, out_tok, client)


class RoutedStream(_StreamBase):
    """Iterator of StreamChunks for one routed request; ``completion`` is set once the stream ends."""

    def __iter__(self) -> Iterator[StreamChunk]:
        run = self.run
        try:
            for arm in run.candidates():
                client = self.router.clients[split_arm(arm)[0]]
                it = iter(client.stream(self.request, timeout_s=run.attempt_timeout_s()))
                try:
                    first = next(it, StreamChunk())
                except ProviderError as err:
                    if not run.failed(err):
                        break
                    continue
                run.first_byte()
                self.served_arm = arm
                acc = _Collector()
                chunk: StreamChunk | None = first
                try:
                    while chunk is not None:
                        acc.add(chunk)
                        yield chunk
                        chunk = next(it, None)
                except ProviderError as err:
                    self._mid_stream_failure(err)
                    raise
                self._done(acc, client)
                return
        except BaseException:
            self._failed()
            raise
        self._finished = True
        raise self.router._exhausted(run, self.features)


class AsyncRoutedStream(_StreamBase):
    """``async for`` over StreamChunks of one routed request; ``completion`` is set once the stream ends."""

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[StreamChunk]:
        run = self.run
        try:
            for arm in run.candidates():
                client = self.router.clients[split_arm(arm)[0]]
                it = client.astream(self.request, timeout_s=run.attempt_timeout_s()).__aiter__()
                try:
                    first = await anext(it, StreamChunk())
                except ProviderError as err:
                    if not run.failed(err):
                        break
                    continue
                run.first_byte()
                self.served_arm = arm
                acc = _Collector()
                chunk: StreamChunk | None = first
                try:
                    while chunk is not None:
                        acc.add(chunk)
                        yield chunk
                        chunk = await anext(it, None)
                except ProviderError as err:
                    self._mid_stream_failure(err)
                    raise
                finally:
                    aclose = getattr(it, "aclose", None)
                    if aclose is not None:
                        await aclose()
                self._done(acc, client)
                return
        except BaseException:
            self._failed()
            raise
        self._finished = True
        raise self.router._exhausted(run, self.features)
