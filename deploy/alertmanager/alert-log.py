"""The demo's alert receiver: Alertmanager's webhooks for `/page` and `/ticket`, written to
standard output as one JSON line per alert (receiver, status, name, severity, summary,
runbook), and kept in memory for `GET /alerts` (the drill and the tests read it). Replace it
with a pager and a ticket queue in a real deployment (deploy/alertmanager/alertmanager.yml).

Usage: python3 alert-log.py [LISTEN_PORT]   (default 9095, on all interfaces in a container;
deploy/local/ passes a loopback address through ALERT_LOG_HOST)
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECEIVED: list[dict] = []
LOCK = threading.Lock()
MAX_KEPT = 1000
MAX_BODY = 1 << 20


class Receiver(BaseHTTPRequestHandler):
    # A client that stops sending holds its thread this long at most.
    timeout = 10

    def do_POST(self) -> None:
        receiver = self.path.strip("/")
        length = int(self.headers.get("content-length") or 0)
        if receiver not in ("page", "ticket") or not 0 < length <= MAX_BODY:
            self.send_error(404 if receiver not in ("page", "ticket") else 400)
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400)
            return
        for alert in body.get("alerts", []):
            labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
            line = {
                "receiver": receiver,
                "status": alert.get("status"),
                "alertname": labels.get("alertname"),
                "severity": labels.get("severity"),
                "slo": labels.get("sloth_slo"),
                "summary": annotations.get("summary"),
                "runbook_url": annotations.get("runbook_url"),
            }
            print(json.dumps(line), flush=True)
            with LOCK:
                RECEIVED.append(line)
                del RECEIVED[:-MAX_KEPT]
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path != "/alerts":
            self.send_error(404)
            return
        with LOCK:
            body = json.dumps(RECEIVED).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # the alert lines are the log
        pass


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9095
    host = os.environ.get("ALERT_LOG_HOST", "0.0.0.0")
    server = ThreadingHTTPServer((host, port), Receiver)
    print(json.dumps({"listening": f"{host}:{port}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
