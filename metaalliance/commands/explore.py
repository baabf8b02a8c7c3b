"""metaalliance explore: the interactive explorer, a local web app in the browser."""

HELP = "interactive explorer in the browser: filters, model, forest/funnel, downloads"
EPILOG = """\
Examples:
  metaalliance explore                                the curated dataset, http://127.0.0.1:8050
  metaalliance explore --port 8060
  metaalliance explore --data my.csv --r r --n n      any CSV, as `pool --data`
  metaalliance explore --where population=adult       start from a subset (always applied)

The app shows filters for every tag (diagnosis, population, setting, modality, treatment,
instrument, rater, timing, outcome domain, effect type, statistic, how read, year), the model
(estimator, test, working model: findings independent, three-level, one composite per sample),
the pooled estimate with CI, PI and heterogeneity, the forest plot, the funnel plot with
Egger's test and trim-and-fill, subgroups by a chosen tag, leave-one-out, and the selected
findings with a link to each source and its locator. Downloads: forest and funnel as PDF, PNG
or SVG at 84, 129 or 174 mm, and the selection as CSV. Every view shows the
`metaalliance pool ... --json` command line that prints its numbers.

It binds to 127.0.0.1 (this machine only) unless --host says otherwise, reads the data once
and writes nothing into data/. Ctrl-C stops it."""


def register(sub, common):
    import argparse

    p = sub.add_parser("explore", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"], common["selection"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("server")
    g.add_argument("--port", type=int, default=8050, help="TCP port (default 8050)")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; the app "
                        "has no login, so think twice before 0.0.0.0)")
    p.add_argument("--json", action="store_true",
                   help="print the address as one JSON line ({\"url\": ..., \"source\": ..., "
                        "\"rows\": ...}) "
                        "once the app listens")
    p.set_defaults(run=run)


def _bind(host: str, port: int):
    """A listening socket on host:port, or OptionError with one clear line."""
    import errno
    import socket

    from metaalliance.errors import OptionError

    if not 0 <= port <= 65535:
        raise OptionError(f"--port {port}: must be between 0 (any free port) and 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OptionError(f"--host {host}: not an address of this machine ({exc.strerror})") \
            from None
    family, _type, _proto, _canon, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    # as uvicorn does: a port whose last connections are in TIME_WAIT can be reused; a port
    # another program listens on still gives EADDRINUSE
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OptionError(f"port {port} on {host} is already in use (another explorer or "
                              "server?); choose another with --port") from None
        if exc.errno == errno.EACCES:
            raise OptionError(f"port {port} on {host}: permission denied (ports below 1024 "
                              "need root); choose another with --port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise OptionError(f"--host {host}: not an address of this machine") from None
        raise OptionError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run(args) -> int:
    import json
    import sys

    from metaalliance.cli import one_line
    from metaalliance.errors import OptionError

    try:
        import uvicorn

        from metaalliance.explorer.app import make_app
    except ImportError as exc:
        raise OptionError(f"the explorer needs the {exc.name or 'shiny'} package: "
                          "pip install 'shiny>=1.2,<2'") from None
    from metaalliance.explorer import logic

    ds = logic.load_dataset(args)      # a bad CSV is one line here, before any server starts
    app = make_app(ds)
    sock = _bind(args.host, args.port)
    host = sock.getsockname()[0]
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    what = "the curated dataset" if ds.curated else ds.source
    if args.json:
        print(json.dumps({"url": url, "source": ds.source, "rows": int(len(ds.frame))}),
              flush=True)
    else:
        print(one_line(f"metaalliance explore: {what} ({len(ds.frame)} findings) at {url}"),
              flush=True)
        print("Open that address in a browser; Ctrl-C stops the explorer.", flush=True)
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(f"warning: listening on {host}: anyone who reaches this machine can open the "
              "explorer (it has no login)", file=sys.stderr)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2,
                            lifespan="on", ws_ping_interval=None)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
