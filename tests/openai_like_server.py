"""A tiny OpenAI-compatible chat server that is not vLLM, for tests: no /tokenize, no
max_model_len, a bearer key required. Run as a script: `python openai_like_server.py PORT KEY`.
It answers every chat with "... The answer is 42." and honest usage counts; model
`broken-1` fails every chat with HTTP 400."""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

REPLY = "Let me think. Six sevens make forty-two. The answer is 42."


class Handler(BaseHTTPRequestHandler):
    key = ""

    def log_message(self, *args: object) -> None:  # quiet
        return None

    def _json(self, status: int, data: object) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.key}":
            return True
        self._json(401, {"error": {"message": "invalid api key"}})
        return False

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path == "/v1/models":
            models = [{"id": name, "object": "model"} for name in ("echo-1", "broken-1")]
            self._json(200, {"object": "list", "data": models})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        if body.get("model") == "broken-1":
            self._json(400, {"error": {"message": "this model always fails"}})
            return
        prompt_tokens = sum(len(m["content"].split()) + 4 for m in body["messages"])
        words = REPLY.split()[: body.get("max_tokens", 100)]
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": " ".join(words)},
                "finish_reason": "stop",
            }
            for i in range(body.get("n", 1))
        ]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words) * len(choices)}
        self._json(200, {"object": "chat.completion", "choices": choices, "usage": usage})


if __name__ == "__main__":
    Handler.key = sys.argv[2]
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
