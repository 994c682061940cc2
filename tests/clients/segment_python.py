"""End-to-end check with Segment's official Python library, unmodified.

Starts `consentry serve` on a free port in a fresh data directory, creates an ingest
write key with the CLI, sends identify/track/page/alias through segment-analytics-python
(gzip on), flushes, then checks in the SQLite file that every event landed once and the
audit log verifies. Usage: python3 tests/clients/segment_python.py path/to/consentry
"""
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

import segment.analytics as analytics


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    binary = os.path.abspath(sys.argv[1])
    data = tempfile.mkdtemp(prefix="consentry-client-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTRY_")}
    env["CONSENTRY_DATA_DIR"] = data
    env["CONSENTRY_POLICIES"] = os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "policies"
    )
    port = free_port()
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=data,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        key = subprocess.run(
            [binary, "keys", "create", "--role", "ingest", "--name", "python client"],
            env=env, cwd=data, check=True, capture_output=True, text=True,
        ).stdout.strip()

        failures = []
        analytics.write_key = key
        analytics.host = f"http://127.0.0.1:{port}"
        analytics.gzip = True
        analytics.sync_mode = True
        analytics.on_error = lambda error, items: failures.append(str(error))
        analytics.identify("user-42", {"email": "client.check@example.com", "plan": "gold"})
        analytics.track("user-42", "Order Completed", {"revenue": 42.5, "currency": "EUR"})
        analytics.page("user-42", "Docs", "Getting started")
        analytics.track(anonymous_id="anon-42", event="Product Viewed", properties={"product_id": "p1"})
        analytics.alias("anon-42", "user-42")
        analytics.flush()
        if failures:
            raise SystemExit(f"the client reported errors: {failures}")

        db = sqlite3.connect(os.path.join(data, "consentry.db"))
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        subjects = db.execute("SELECT COUNT(*) FROM subjects WHERE status = 'active'").fetchone()[0]
        db.close()
        if events != 5 or subjects != 1:
            raise SystemExit(f"expected 5 events of 1 subject, found {events} events of {subjects}")
        verify = subprocess.run([binary, "audit", "verify"], env=env, cwd=data,
                                capture_output=True, text=True)
        if verify.returncode != 0:
            raise SystemExit(f"audit verify failed: {verify.stdout}{verify.stderr}")
        print(f"segment-analytics-python {analytics.VERSION}: 5 events stored, 1 subject; {verify.stdout.strip()}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
