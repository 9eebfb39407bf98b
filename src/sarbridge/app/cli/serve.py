"""Web viewer of an index: ``sarbridge serve --index INDEX [--host H] [--port P] ...``."""

from __future__ import annotations

import argparse
import socket

from sarbridge.core.errors import SarbridgeError


def _check_port(host: str, port: int) -> None:
    """Fail with one clear line when ``host:port`` cannot be bound (in use, bad address)."""
    if not 0 < port < 65536:
        raise SarbridgeError(f"port {port} is not a TCP port", "pass --port 1..65535, e.g. 8000")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise SarbridgeError(f"host '{host}' cannot be resolved", "pass --host 127.0.0.1 or 0.0.0.0") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise SarbridgeError(f"cannot listen on {host}:{port} ({exc.strerror})",
                                 "choose another --port or stop the program using it") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from sarbridge.app.serve import create_app, require_serve
    from sarbridge.core.optional import require

    require_serve()  # the missing extra first, before the port check and the index
    uvicorn = require("uvicorn", "serve")
    _check_port(args.host, args.port)
    app = create_app(args.index, top_k=args.top_k, max_upload_mb=args.max_upload_mb, device=args.device or "auto")
    s = app.state.settings
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {s['kind']} index {s['index']} ({s['count']} items) at http://{shown}:{args.port}/ "
          "(Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sarbridge serve``."""
    s = sub.add_parser("serve", help="web viewer: upload a chip, see the top-k matches (and the map position)")
    s.add_argument("--index", required=True, help="folder of 'sarbridge index build' (a re-ID gallery or a geo map index)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    s.add_argument("--top-k", "-k", dest="top_k", type=int, default=10, metavar="K",
                   help="matches shown by default, 1..100 (default: %(default)s)")
    s.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload in MB (default 20)")
    s.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    s.add_argument("--quiet", action="store_true",
                   help="no per-request log lines; warnings and errors are still printed (default: off)")
    s.set_defaults(func=cmd_serve)
