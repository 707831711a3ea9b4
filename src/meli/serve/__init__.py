"""`meli serve`: a model bundle behind HTTP (Starlette on uvicorn), with dynamic batching and
reload without a failed request.

    model.py     the bundle (a directory, or a registry artifact fetched with DVC), its version
                 and its calibration
    requests.py  request bodies read and checked (POST /predict's titles, k and knobs), and
                 the answers of a batch written
    app.py       the ASGI app: /predict, /health, /model, /metrics, /reload, the page at /
    page.html    the page (package data)

One process serves one model; replicas are stateless, so scale out by running more of them
behind any load balancer.
"""

from __future__ import annotations

import argparse
import gc
import logging
import socket
from pathlib import Path

from meli.kernel_caches import bound_kernel_caches

log = logging.getLogger("meli")


def serve(args: argparse.Namespace) -> None:
    """Load the model (a failure ends here, in one line), then serve until interrupted."""
    # oneDNN keeps a kernel per input shape; batches come in many shapes (see `meli predict`).
    bound_kernel_caches()
    import torch

    from meli.serve.app import Settings, create_app
    from meli.serve.model import MeliError, ModelSource

    if args.threads < 1:
        raise MeliError(f"--threads must be at least 1, got {args.threads}")
    if not 0 <= args.port <= 65535:
        raise MeliError(f"--port must be from 0 to 65535, got {args.port}")
    if not 0 <= args.batch_wait_ms <= 1000:
        raise MeliError(f"--batch-wait-ms must be from 0 to 1000, got {args.batch_wait_ms:g}")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    if args.artifact:
        repository, name = args.artifact
        source = ModelSource(repository=repository, artifact=name, rev=args.rev,
                             stage=args.stage, device=args.device, precision=args.precision)
    else:
        if args.rev or args.stage:
            raise MeliError("--rev and --stage choose a version of an --artifact, not of a "
                            "--model directory")
        source = ModelSource(directory=Path(args.model), device=args.device,
                             precision=args.precision)
    settings = Settings(max_titles=args.max_titles, max_batch_titles=args.max_batch_titles,
                        batch_wait_ms=args.batch_wait_ms)
    # Bound first, so a taken port fails at once; listening only once the model is loaded, so
    # connections are refused, not left waiting, until the server can answer them.
    listener = _bind(args.host, args.port)
    try:
        model = source.load()
    except BaseException:
        listener.close()
        raise
    log.info("serve: %s version %s loaded in %.1fs", model.name, model.version,
             model.loaded_seconds)
    listener.listen(2048)
    app = create_app(model, source, settings, handle_sighup=True)

    import uvicorn

    config = uvicorn.Config(app, loop="uvloop", http="httptools", log_level="warning",
                            access_log=False, proxy_headers=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    # Everything loaded so far (PyTorch, the model, the app: some 200,000 objects) lives as long
    # as the process: out of the collector's sight, a full collection no longer pauses every
    # request for the ~100 ms it takes to walk them all.
    gc.collect()
    gc.freeze()
    log.info("serve: listening on http://%s:%d/ (POST /predict, /reload; GET /health, /model, "
             "/metrics; SIGHUP reloads)", *listener.getsockname()[:2])
    uvicorn.Server(config).run(sockets=[listener])


def _bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that a taken port is one clear line."""
    from meli.serve.model import MeliError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise MeliError(f"--host {host}: {error.strerror}") from None
    family, _, _, _, address = infos[0]
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as error:
        listener.close()
        raise MeliError(f"{host}:{port}: cannot listen there: {error.strerror}") from None
    listener.set_inheritable(True)
    return listener
