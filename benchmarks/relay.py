"""A minimal raw grpc.aio two-hop relay: the floor EasyRemote is measured against.

The relay has the same shape as the EasyRemote gateway (workers dial OUT to it,
clients call through it) and nothing else: no codegen, no pickling, no chunking,
no batching, no scheduling beyond round robin. Every request and every reply is
exactly one raw-bytes gRPC message, so any gap between it and EasyRemote is the
cost of EasyRemote's features and implementation, not of gRPC itself.

Wire format (all integers big-endian):

* client -> relay (``Call``):   ``opcode(1) + body``
* relay -> worker (``Attach``): ``call_id(8) + opcode(1) + body``
* worker -> relay (``Attach``): ``call_id(8) + result``; the worker's first
  message on the stream is a hello (its name) that marks it attached.
* relay -> client:              ``result``

Ops: ``i`` inc (body and result are an 8-byte signed int, result = body + 1),
``e`` echo (result = body), ``s`` sleep (0.1 s via asyncio.sleep, empty result).

Run the roles as separate processes:

    python benchmarks/relay.py relay --port 50051
    python benchmarks/relay.py worker --relay 127.0.0.1:50051 --name w1 --slots 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import struct
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

ATTACH_METHOD = "/relay.Relay/Attach"
CALL_METHOD = "/relay.Relay/Call"
WORKERS_METHOD = "/relay.Relay/Workers"

OP_INC = b"i"
OP_ECHO = b"e"
OP_SLEEP = b"s"

SLEEP_SECONDS = 0.1
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# Both ends need the raised limits: gRPC's 4 MiB receive default would reject
# the 64 MiB echo on whichever hop hears it first.
GRPC_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

_CALL_ID = struct.Struct(">Q")
_INT64 = struct.Struct(">q")


def _identity(data: bytes) -> bytes:
    return data


class _AttachedWorker:
    """One worker's Attach stream as seen by the relay."""

    def __init__(self, name: str) -> None:
        self.name = name
        # Only the Attach handler may write to its stream, so calls hand their
        # messages over through this queue instead of writing concurrently.
        self.outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self.pending: dict[int, asyncio.Future[bytes]] = {}

    def fail_pending(self, reason: str) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError(reason))
        self.pending.clear()


class RelayServicer:
    """The relay's three methods over raw bytes."""

    def __init__(self) -> None:
        self._workers: list[_AttachedWorker] = []
        self._next_worker = 0
        self._call_ids = itertools.count(1)

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler with no (de)serializers: handlers see raw bytes."""
        return grpc.method_handlers_generic_handler(
            "relay.Relay",
            {
                "Attach": grpc.stream_stream_rpc_method_handler(self.attach),
                "Call": grpc.unary_unary_rpc_method_handler(self.call),
                "Workers": grpc.unary_unary_rpc_method_handler(self.workers),
            },
        )

    async def attach(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        """Holds one worker's stream: yields its requests, resolves its replies."""
        iterator = aiter(requests)
        try:
            hello = await anext(iterator)
        except StopAsyncIteration:
            return
        worker = _AttachedWorker(hello.decode("utf-8", "replace"))

        async def read_replies() -> None:
            async for message in iterator:
                (call_id,) = _CALL_ID.unpack_from(message)
                future = worker.pending.pop(call_id, None)
                if future is not None and not future.done():
                    future.set_result(message[_CALL_ID.size :])

        reader = asyncio.create_task(read_replies())
        getter: asyncio.Future[bytes] | None = None
        self._workers.append(worker)
        try:
            while True:
                getter = asyncio.ensure_future(worker.outgoing.get())
                # Wake on either a request to forward or the worker going away,
                # so a dead worker's pending calls fail instead of hanging.
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    break
                yield getter.result()
        finally:
            self._workers.remove(worker)
            if getter is not None:
                getter.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            worker.fail_pending(f"worker {worker.name} detached")

    async def call(self, request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        """Forwards one request to the next worker (round robin), returns its reply."""
        if not self._workers:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no worker attached")
        worker = self._workers[self._next_worker % len(self._workers)]
        self._next_worker += 1
        call_id = next(self._call_ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        worker.pending[call_id] = future
        worker.outgoing.put_nowait(_CALL_ID.pack(call_id) + request)
        try:
            return await future
        except ConnectionError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise  # unreachable: abort raises; keeps type checkers honest
        finally:
            # A client that gave up (deadline, cancel) must not leak its entry.
            worker.pending.pop(call_id, None)

    async def workers(self, request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        """The number of attached workers, as ASCII digits (for readiness polls)."""
        return str(len(self._workers)).encode()


async def serve_relay(host: str, port: int) -> None:
    """Serves the relay until SIGTERM or SIGINT."""
    server = aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((RelayServicer().handler(),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"relay: could not listen on {host}:{port}")
    await server.start()
    print(f"relay listening on {host}:{port}", flush=True)
    await _wait_for_stop_signal()
    await server.stop(grace=1.0)


async def _execute(payload: bytes) -> bytes:
    """Runs one op on ``opcode + body`` and returns the result bytes."""
    opcode = payload[:1]
    if opcode == OP_INC:
        (value,) = _INT64.unpack_from(payload, 1)
        return _INT64.pack(value + 1)
    if opcode == OP_ECHO:
        return payload[1:]
    if opcode == OP_SLEEP:
        await asyncio.sleep(SLEEP_SECONDS)
        return b""
    raise ValueError(f"unknown opcode {opcode!r}")


async def serve_worker(relay_address: str, name: str, slots: int | None) -> None:
    """Dials the relay, attaches, and runs requests until the stream or a signal ends."""
    async with aio.insecure_channel(relay_address, options=GRPC_OPTIONS) as channel:
        # wait_for_ready: a worker may start before the relay listens.
        stream = channel.stream_stream(ATTACH_METHOD)(wait_for_ready=True)
        # One writer at a time per stream: replies queue here and one task writes.
        replies: asyncio.Queue[bytes] = asyncio.Queue()
        limit = asyncio.Semaphore(slots) if slots else None
        running: set[asyncio.Task[None]] = set()

        async def handle(message: bytes) -> None:
            call_id = message[: _CALL_ID.size]
            payload = message[_CALL_ID.size :]
            if limit is None:
                result = await _execute(payload)
            else:
                async with limit:
                    result = await _execute(payload)
            replies.put_nowait(call_id + result)

        async def write_replies() -> None:
            await stream.write(name.encode())
            while True:
                await stream.write(await replies.get())

        async def read_requests() -> None:
            while True:
                message = await stream.read()
                if message is aio.EOF:
                    return
                task = asyncio.create_task(handle(message))
                running.add(task)
                task.add_done_callback(running.discard)

        writer = asyncio.create_task(write_replies())
        reader = asyncio.create_task(read_requests())
        stopper = asyncio.create_task(_wait_for_stop_signal())
        print(f"worker {name} attaching to {relay_address}", flush=True)
        try:
            done, _ = await asyncio.wait(
                {writer, reader, stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stopper:
                    task.result()  # re-raises why the stream ended, if it failed
        finally:
            for task in (writer, reader, stopper, *running):
                task.cancel()
            stream.cancel()


async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


class RelayClient:
    """The client side of the relay over one grpc.aio channel.

    Example:
        >>> async with RelayClient("127.0.0.1:50051") as client:
        ...     await client.inc(41)
        42
    """

    def __init__(self, address: str, *, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._channel = aio.insecure_channel(address, options=GRPC_OPTIONS)
        # No serializers: bytes go to the wire exactly as given.
        self._call = self._channel.unary_unary(CALL_METHOD)
        self._workers = self._channel.unary_unary(WORKERS_METHOD)

    async def raw(self, payload: bytes, timeout: float | None = None) -> bytes:
        """Sends ``opcode + body``; returns the worker's result bytes."""
        result: bytes = await self._call(payload, timeout=timeout or self.timeout)
        return result

    async def inc(self, value: int) -> int:
        """Returns ``value + 1`` computed on a worker."""
        (result,) = _INT64.unpack(await self.raw(OP_INC + _INT64.pack(value)))
        return int(result)

    async def echo(self, data: bytes) -> bytes:
        """Returns ``data`` after a round trip through a worker."""
        return await self.raw(OP_ECHO + data)

    async def sleep(self) -> None:
        """Makes a worker sleep 0.1 s (asyncio.sleep) in one of its slots."""
        await self.raw(OP_SLEEP)

    async def worker_count(self, timeout: float = 2.0) -> int:
        """How many workers are attached to the relay right now."""
        reply: bytes = await self._workers(b"", timeout=timeout, wait_for_ready=True)
        return int(reply)

    async def close(self) -> None:
        """Closes the channel; calls in flight fail."""
        await self._channel.close()

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def main(argv: list[str] | None = None) -> int:
    """Runs one role: ``relay`` or ``worker``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest="role", required=True)
    relay = roles.add_parser("relay", help="serve the relay")
    relay.add_argument("--host", default="127.0.0.1")
    relay.add_argument("--port", type=int, required=True)
    worker = roles.add_parser("worker", help="attach a worker to a relay")
    worker.add_argument("--relay", required=True, help="host:port of the relay")
    worker.add_argument("--name", default="worker")
    worker.add_argument("--slots", type=int, default=0, help="concurrent ops (0: unlimited)")
    args = parser.parse_args(argv)
    if args.role == "relay":
        asyncio.run(serve_relay(args.host, args.port))
    else:
        asyncio.run(serve_worker(args.relay, args.name, args.slots or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
