"""A small OpenAI-compatible chat-completions server for tests, on 127.0.0.1.

It speaks the real protocol over real HTTP, so the `openai` client, its parsing and our
retries are exercised as they would be against vLLM or Ollama. Replies are scripted:
`faults` is a queue of "429", "500", "garbage" (a 200 reply that is not JSON) and "empty"
(JSON without choices), consumed one per request before normal answers resume; `reply`
computes a normal answer from the prompt.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedOpenAIServer:
    def __init__(self, reply: Callable[[str], str] = lambda prompt: "look"):
        self.reply = reply
        self.faults: deque[str] = deque()
        self.requests: list[dict] = []
        self.auth_headers: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.auth_headers.append(self.headers.get("Authorization", ""))
                fault = server.faults.popleft() if server.faults else None
                if fault in ("429", "500"):
                    self._send(int(fault), {"error": {"message": f"scripted {fault}"}})
                elif fault == "garbage":
                    self._send(200, b"<html>upstream proxy error</html>")
                elif fault == "empty":
                    self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
                elif self.path == "/v1/chat/completions":
                    prompt = body["messages"][-1]["content"]
                    text = server.reply(prompt)
                    self._send(200, _chat(body["model"], text, len(prompt.split())))
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def _send(self, status: int, payload) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _chat(model: str, text: str, prompt_tokens: int) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        },
    }


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up before its answer (a command that already failed, a retry
    given up) is not the server's error: printed, it would land in the tests' captured
    stderr, where the CLI's one-line errors are checked."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)
