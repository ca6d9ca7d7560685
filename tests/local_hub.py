"""A stand-in for the web corpus's hub on 127.0.0.1: it answers every HEAD with 200."""

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Hub(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@contextmanager
def local_hub() -> Iterator[str]:
    """The URL of a hub that answers, for as long as the block runs; then nothing listens there."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api/datasets/x"
    finally:
        server.shutdown()
        server.server_close()
