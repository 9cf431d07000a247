"""A uvicorn-served ASGI app whose endpoint awaits one send per request."""

from __future__ import annotations

import asyncio

from conftest import need

from kpush.aio import AIOKafkaProducer


def make_app(bootstrap: str):
    state = {}

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    state["p"] = AIOKafkaProducer(bootstrap_servers=bootstrap)
                    await state["p"].start()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await state["p"].stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        md = await state["p"].send_and_wait("asgi", body)
        out = b"%d:%d" % (md.partition, md.offset)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(out))]})
        await send({"type": "http.response.body", "body": out})

    return app


async def request(port: int, body: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"POST /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await w.drain()
    data = await r.read()
    w.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return payload


async def test_uvicorn_app_many_concurrent_requests(broker):
    uvicorn = need("uvicorn", "pip install uvicorn")
    config = uvicorn.Config(make_app(broker.bootstrap), host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
            assert not task.done(), "uvicorn stopped"
        port = server.servers[0].sockets[0].getsockname()[1]
        sem = asyncio.Semaphore(500)

        async def one(i: int) -> bytes:
            async with sem:
                return await request(port, b"req-%d" % i)

        answers = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(2000))), 120)
        assert len(set(answers)) == 2000  # 2000 distinct (partition, offset) pairs
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
