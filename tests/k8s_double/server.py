"""A Kubernetes API server double on 127.0.0.1, over HTTPS: the REST paths of every kind deploy/ holds
and the calls the ``k8s`` executor and dagster-k8s make, with the API server's JSON shapes and
Status errors, bearer-token authentication and RBAC authorisation.

Identities: the admin token (the test's kubeconfig, cluster-admin) and one token per ServiceAccount,
mounted into each pod that automounts it (``/var/run/secrets/kubernetes.io/serviceaccount``). A
ServiceAccount may do only what the Roles bound to it allow (403 with the real Status body otherwise).
Created objects are validated against the Kubernetes schema (``kubernetes-validate``, strict).
Verbs: create, get, list, delete (PATCH, PUT and watch are answered 405: nothing here uses them).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import yaml

from k8s_double import rbac
from k8s_double.cluster import Cluster
from k8s_double.tls import write_serving_cert

K8S_VERSION = "1.33.0"
# (API group, plural) -> (kind, namespaced)
RESOURCES = {
    ("", "namespaces"): ("Namespace", False),
    ("", "configmaps"): ("ConfigMap", True),
    ("", "secrets"): ("Secret", True),
    ("", "serviceaccounts"): ("ServiceAccount", True),
    ("", "services"): ("Service", True),
    ("", "pods"): ("Pod", True),
    ("", "events"): ("Event", True),
    ("", "persistentvolumeclaims"): ("PersistentVolumeClaim", True),
    ("apps", "deployments"): ("Deployment", True),
    ("batch", "jobs"): ("Job", True),
    ("rbac.authorization.k8s.io", "roles"): ("Role", True),
    ("rbac.authorization.k8s.io", "rolebindings"): ("RoleBinding", True),
    ("rbac.authorization.k8s.io", "clusterroles"): ("ClusterRole", False),
    ("networking.k8s.io", "networkpolicies"): ("NetworkPolicy", True),
    ("policy", "poddisruptionbudgets"): ("PodDisruptionBudget", True),
}
_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+)(?=/))?/(?P<res>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def status(code: int, reason: str, message: str, details: dict | None = None) -> dict[str, Any]:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _qualified(group: str, res: str) -> str:
    return f"{res}.{group}" if group else res


def _selector(raw: str) -> list[tuple[str, str, str | None]]:
    """(op, key, value) for ``a=b``, ``a==b``, ``a!=b``, ``a`` and ``!a``."""
    terms = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        if "!=" in part:
            key, value = part.split("!=", 1)
            terms.append(("!=", key, value))
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            terms.append(("=", key, value))
        elif part.startswith("!"):
            terms.append(("!", part[1:], None))
        else:
            terms.append(("exists", part, None))
    return terms


def _selected(labels: dict[str, str], terms) -> bool:
    for op, key, value in terms:
        if (op == "=" and labels.get(key) != value) or (op == "!=" and labels.get(key) == value):
            return False
        if (op == "exists" and key not in labels) or (op == "!" and key in labels):
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet: pytest shows failures, not every request
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = (
            body
            if isinstance(body, bytes)
            else body.encode()
            if isinstance(body, str)
            else json.dumps(body).encode()
        )
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        double = self.server.double
        double.requests.append((method, self.path))
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        user = double.identity(token.strip()) if scheme.lower() == "bearer" else None  # case-insensitive
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if user is None:
            self._send(401, status(401, "Unauthorized", "Unauthorized"))
            return
        url = urlsplit(self.path)
        body = json.loads(raw) if raw else None
        code, payload, kind = double.handle(method, url.path, parse_qs(url.query), body, user)
        self._send(code, payload, "text/plain" if kind == "text" else "application/json")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: KubernetesApiDouble


class KubernetesApiDouble:
    ADMIN = "kubernetes-admin"

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.token = secrets.token_hex(16)  # the admin's (cluster-admin)
        self.requests: list[tuple[str, str]] = []
        # (user, verb, "group/resource[/sub]", namespace, name, code) of every authorised-or-not call.
        self.audit: list[tuple[str, str, str, str | None, str | None, int]] = []
        self.refuse_next: list[int] = []  # status codes to answer the next requests with (fault injection)
        self.unavailable_until = 0.0  # monotonic time until which every request gets 503 (a restart)
        self.cert, key = write_serving_cert(cluster.root)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.double = self
        cluster.api_port = self._server.server_address[1]
        cluster.ca_path = self.cert
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KubernetesApiDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.cluster.close()
        # Pod logs and volumes: gone with the cluster (read them before stopping it).
        shutil.rmtree(self.cluster.root, ignore_errors=True)

    def write_kubeconfig(self, path: Path, namespace: str = "leviathan") -> Path:
        ca = base64.b64encode(self.cert.read_bytes()).decode()  # inline: the file outlives the double
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "double", "cluster": {"server": self.url, "certificate-authority-data": ca}}
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {"name": "double", "context": {"cluster": "double", "user": "admin", "namespace": namespace}}
            ],
            "current-context": "double",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def identity(self, token: str) -> str | None:
        if token == self.token:
            return self.ADMIN
        account = self.cluster.tokens.get(token)
        return f"system:serviceaccount:{account[0]}:{account[1]}" if account else None

    def outage(self, seconds: float) -> None:
        """The API server answers 503 to everything for ``seconds`` (an upgrade, an etcd hiccup)."""
        self.unavailable_until = time.monotonic() + seconds

    # -- authorisation --------------------------------------------------------------------------------
    def allowed(
        self, user: str, verb: str, group: str, resource: str, namespace: str | None, name: str | None
    ) -> bool:
        if user == self.ADMIN:
            return True
        _, _, rest = user.partition("system:serviceaccount:")
        account_ns, _, account = rest.partition(":")
        cluster = self.cluster
        for binding in cluster.list("RoleBinding", namespace) if namespace else []:
            if not any(rbac.subject_matches(s, account_ns, account) for s in binding.get("subjects", [])):
                continue
            ref = binding["roleRef"]
            role = cluster.get(ref["kind"], namespace if ref["kind"] == "Role" else "", ref["name"])
            if role and any(rbac.rule_allows(r, verb, group, resource, name) for r in role.get("rules", [])):
                return True
        return False

    # -- requests -------------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict, body: Any, user: str = ADMIN
    ) -> tuple[int, Any, str]:
        if time.monotonic() < self.unavailable_until:
            msg = "the server is currently unable to handle the request"
            return 503, status(503, "ServiceUnavailable", msg), "json"
        if self.refuse_next:
            code = self.refuse_next.pop(0)
            return code, status(code, "InternalError" if code >= 500 else "Forbidden", "injected"), "json"
        match = _PATH.match(path)
        group = (match and match.group("group")) or ""
        if match is None or (group, match.group("res")) not in RESOURCES:
            return 404, status(404, "NotFound", "the server could not find the requested resource"), "json"
        res, ns, name, sub = match.group("res"), match.group("ns"), match.group("name"), match.group("sub")
        kind, namespaced = RESOURCES[(group, res)]
        if namespaced and ns is None and method != "GET":
            return 404, status(404, "NotFound", "the server could not find the requested resource"), "json"
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or (
            ("delete" if name else "deletecollection")
            if method == "DELETE"
            else "get"
            if name
            else ("watch" if query.get("watch", [""])[0] in ("true", "1") else "list")
        )
        resource = f"{res}/{sub}" if sub else res
        if not self.allowed(user, verb, group, resource, ns, name):
            self.audit.append((user, verb, f"{group}/{resource}", ns, name, 403))
            return 403, rbac.forbidden(user, verb, group, resource, ns, name), "json"
        if ns is not None and self.cluster.get("Namespace", "", ns) is None:
            return (
                404,
                status(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}),
                "json",
            )
        code, payload, form = self._serve(verb, group, res, kind, ns or "", name, sub, query, body)
        self.audit.append((user, verb, f"{group}/{resource}", ns, name, code))
        return code, payload, form

    def _serve(self, verb, group, res, kind, ns, name, sub, query, body):
        cluster = self.cluster
        not_found = (
            404,
            status(
                404,
                "NotFound",
                f'{_qualified(group, res)} "{name}" not found',
                {"name": name, **({"group": group} if group else {}), "kind": res},
            ),
            "json",
        )
        if verb in ("update", "patch", "watch", "deletecollection"):
            return 405, status(405, "MethodNotAllowed", f"{verb} is not supported by this double"), "json"
        if verb == "create":
            return self._create(group, res, kind, ns, body)
        if verb == "list":
            return 200, self._list(group, kind, ns, query), "json"
        if kind == "Job":
            job = cluster.jobs.get((ns, name))
            if job is None:
                return not_found
            if verb == "delete":
                options = body or {}
                policy = query.get("propagationPolicy", [options.get("propagationPolicy")])[0]
                cluster.delete_job(ns, name, policy)
                return (
                    200,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": name,
                            "group": "batch",
                            "kind": "jobs",
                            "uid": job.body["metadata"]["uid"],
                        },
                    },
                    "json",
                )
            return 200, job.to_api(), "json"
        if kind == "Pod":
            pod = cluster.pod(ns, name)
            if pod is None:
                return not_found
            if sub == "log":
                return self._log(pod, name, query)
            if verb == "delete":
                grace = query.get("gracePeriodSeconds", [None])[0]
                cluster.delete_pod(pod, float(grace) if grace is not None else None)
            return 200, pod.to_api(), "json"
        obj = cluster.get(kind, ns, name)
        if obj is None:
            return not_found
        if verb == "delete":
            cluster.delete(kind, ns, name)
        return 200, obj, "json"

    def _create(self, group, res, kind, ns, body):
        if not isinstance(body, dict) or body.get("kind", kind) != kind:
            return 400, status(400, "BadRequest", f"the body is not a {kind}"), "json"
        # As the API server's decoder does: a missing kind/apiVersion defaults to the endpoint's.
        body.setdefault("kind", kind)
        body.setdefault("apiVersion", f"{group}/v1" if group else "v1")
        meta = body.get("metadata") or {}
        if ns and meta.get("namespace", ns) != ns:
            msg = "the namespace of the provided object does not match the namespace sent on the request"
            return 400, status(400, "BadRequest", msg), "json"
        try:
            kubernetes_validate.validate(body, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            msg = f'{kind} "{meta.get("name")}" is invalid: {where}: {exc.message}'
            return 422, status(422, "Invalid", msg, {"name": meta.get("name"), "kind": res}), "json"
        name = meta["name"]
        exists = (
            (ns, name) in self.cluster.jobs if kind == "Job" else self.cluster.get(kind, ns, name) is not None
        )
        if exists:
            details = {"name": name, **({"group": group} if group else {}), "kind": res}
            return (
                409,
                status(409, "AlreadyExists", f'{_qualified(group, res)} "{name}" already exists', details),
                "json",
            )
        if kind == "Job":
            return 201, self.cluster.create_job(ns, body), "json"
        if kind in ("Pod", "Event"):
            return (
                405,
                status(405, "MethodNotAllowed", f"creating {res} directly is not supported by this double"),
                "json",
            )
        return 201, self.cluster.put(kind, ns, body), "json"

    def _list(self, group, kind, ns, query):
        terms = _selector(query.get("labelSelector", [""])[0])
        fields = dict(t[1:] for t in _selector(query.get("fieldSelector", [""])[0]) if t[0] == "=")
        cluster = self.cluster
        if kind == "Job":
            items = [j.to_api() for (n, _), j in list(cluster.jobs.items()) if n == ns]
        elif kind == "Pod":
            items = [p.to_api() for p in cluster.all_pods() if p.namespace == ns]
        elif kind == "Event":
            items = [
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"{n}.event", "namespace": ns},
                    "involvedObject": {"kind": "Job", "name": n, "namespace": ns},
                    "reason": "FailedCreate",
                    "message": j.event,
                    "type": "Warning",
                }
                for (jns, n), j in list(cluster.jobs.items())
                if jns == ns and j.event
            ]
        else:
            items = cluster.list(kind, ns or None)
        items = [
            i
            for i in items
            if _selected(i["metadata"].get("labels") or {}, terms)
            and all(
                i["metadata"].get(k.removeprefix("metadata.")) == v
                for k, v in fields.items()
                if k.startswith("metadata.")
            )
            and all(
                i.get("involvedObject", {}).get(k.removeprefix("involvedObject.")) == v
                for k, v in fields.items()
                if k.startswith("involvedObject.")
            )
        ]
        version = "v1" if not group else f"{group}/v1"
        return {
            "apiVersion": version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }

    def _log(self, pod, name, query):
        if pod.log_path is None or not pod.log_path.exists():
            reason = pod.waiting[0] if pod.waiting else "ContainerCreating"
            msg = f'container "{pod.container}" in pod "{name}" is waiting to start: {reason}'
            return 400, status(400, "BadRequest", msg), "json"
        data = pod.log_path.read_bytes()
        tail = query.get("tailLines", [None])[0]
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) else b""
        limit = int(query.get("limitBytes", ["0"])[0])
        return 200, data[:limit] if limit else data, "text"
