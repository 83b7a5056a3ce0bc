"""A Kubernetes API server double on 127.0.0.1: the REST endpoints the ``k8s`` executor and dagster-k8s's
``K8sRunLauncher`` call, with the API server's JSON shapes, Status errors and bearer-token auth.

Endpoints: POST/GET/DELETE ``/apis/batch/v1/namespaces/{ns}/jobs[/{name}[/status]]`` (Jobs are
validated against the real schema with ``kubernetes-validate``: an invalid one is refused with 422, as
the API server would), GET ``/apis/batch/v1/namespaces/{ns}/jobs`` (list, label selector),
GET ``/api/v1/namespaces/{ns}/pods`` (label selector), GET/DELETE ``/api/v1/namespaces/{ns}/pods/{name}``,
GET ``.../pods/{name}/log``, GET ``/api/v1/namespaces/{ns}/events`` (always empty).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import yaml

from k8s_double.cluster import Cluster

K8S_VERSION = "1.33.0"
_JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(/status)?$")
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/log)?$")
_EVENTS = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _selector(query: dict[str, list[str]]) -> dict[str, str]:
    raw = query.get("labelSelector", [""])[0]
    return dict(part.split("=", 1) for part in raw.split(",") if "=" in part)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet: pytest shows failures, not every request
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        double = self.server.double
        double.requests.append((method, self.path))
        if self.headers.get("Authorization") != f"Bearer {double.token}":
            self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        code, payload, kind = double.handle(method, url.path, query, body)
        self._send(code, payload, "text/plain" if kind == "text" else "application/json")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: KubernetesApiDouble


class KubernetesApiDouble:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.token = secrets.token_hex(16)
        self.requests: list[tuple[str, str]] = []
        self.refuse_next: list[int] = []  # status codes to answer the next requests with (fault injection)
        self.unavailable_until = 0.0  # monotonic time until which every request gets 503 (a restart)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.double = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KubernetesApiDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.cluster.close()

    def write_kubeconfig(self, path: Path, namespace: str = "leviathan") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [
                {"name": "double", "context": {"cluster": "double", "user": "tester", "namespace": namespace}}
            ],
            "current-context": "double",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def outage(self, seconds: float) -> None:
        """The API server answers 503 to everything for ``seconds`` (an upgrade, an etcd hiccup)."""
        self.unavailable_until = time.monotonic() + seconds

    def handle(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any, str]:
        if time.monotonic() < self.unavailable_until:
            return (
                503,
                _status(503, "ServiceUnavailable", "the server is currently unable to handle the request"),
                "json",
            )
        if self.refuse_next:
            code = self.refuse_next.pop(0)
            return code, _status(code, "InternalError" if code >= 500 else "Forbidden", "injected"), "json"
        for pattern, handler in ((_JOBS, self._jobs), (_PODS, self._pods), (_EVENTS, self._events)):
            match = pattern.match(path)
            if match:
                namespace = match.group(1)
                if namespace not in self.cluster.namespaces:
                    return 404, _status(404, "NotFound", f'namespaces "{namespace}" not found'), "json"
                return handler(method, namespace, match.group(2), match.group(3), query, body)
        return 404, _status(404, "NotFound", "the server could not find the requested resource"), "json"

    def _jobs(self, method, namespace, name, sub, query, body):
        cluster = self.cluster
        if method == "POST" and name is None:
            try:
                kubernetes_validate.validate(body, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                return 422, _status(422, "Invalid", f"Job is invalid: {exc.message}"), "json"
            job_name = body["metadata"]["name"]
            if (namespace, job_name) in cluster.jobs:
                return 409, _status(409, "AlreadyExists", f'jobs.batch "{job_name}" already exists'), "json"
            return 201, cluster.create_job(namespace, body), "json"
        if method == "GET" and name is None:
            selector = _selector(query)
            items = [
                j.to_api()
                for (ns, _), j in list(cluster.jobs.items())
                if ns == namespace
                and all(j.body["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
            ]
            return 200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items}, "json"
        job = cluster.jobs.get((namespace, name))
        if job is None:
            return 404, _status(404, "NotFound", f'jobs.batch "{name}" not found'), "json"
        if method == "GET":
            return 200, job.to_api(), "json"
        if method == "DELETE":
            cluster.delete_job(namespace, name)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}, "json"
        return 405, _status(405, "MethodNotAllowed", method), "json"

    def _pods(self, method, namespace, name, sub, query, body):
        if name is None:
            items = [p.to_api() for p in self.cluster.pods(namespace, _selector(query))]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}, "json"
        pod = self.cluster.pod(namespace, name)
        if pod is None:
            return 404, _status(404, "NotFound", f'pods "{name}" not found'), "json"
        if sub == "/log":
            if pod.log_path is None:
                msg = f'container "{pod.container}" in pod "{name}" is waiting to start'
                return 400, _status(400, "BadRequest", msg), "json"
            text = pod.log_path.read_bytes()
            limit = int(query.get("limitBytes", ["0"])[0])
            return 200, (text[:limit] if limit else text).decode(errors="replace"), "text"
        if method == "DELETE":
            self.cluster.delete_job(namespace, pod.job)
            return 200, pod.to_api(), "json"
        return 200, pod.to_api(), "json"

    def _events(self, method, namespace, name, sub, query, body):
        return 200, {"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": []}, "json"
