"""The project's one client for Prometheus' HTTP query API (instant and range queries).

Every figure a release step is judged on, and the drift check's class counts, come from here: PromQL
over the metrics the real server exports, scraped by a real Prometheus, so the controller and the
drift check see what the dashboards and alerts see. One place decodes Prometheus' errors.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

from common.exit_codes import Unavailable


class PrometheusUnavailable(Unavailable):
    """Prometheus (or a ``/metrics`` page) did not answer, rejected a query, or answered nonsense (code 3)."""


def fetch(url: str, timeout_s: float) -> bytes:
    """GET ``url``; an HTTP error says Prometheus' own ``error`` field when it sent one."""
    shown = url.split("?", 1)[0]
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error") or exc.reason
        except (OSError, ValueError, AttributeError):
            detail = exc.reason
        raise PrometheusUnavailable(f"{shown} answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PrometheusUnavailable(f"cannot reach {shown}: {getattr(exc, 'reason', exc)}") from None


Series = list[tuple[dict[str, str], float]]


class Prometheus:
    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str]) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            body = json.loads(fetch(url, self.timeout_s))
        except ValueError as exc:
            raise PrometheusUnavailable(
                f"{self.url}{path} answered something that is not JSON: {exc}"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success" or "data" not in body:
            detail = body.get("error", body) if isinstance(body, dict) else body
            raise PrometheusUnavailable(f"Prometheus rejected {params.get('query')!r}: {detail}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> Series:
        """An instant vector: ``[(labels, value)]``; NaN values are dropped."""
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        out = []
        for item in self._get("/api/v1/query", params)["result"]:
            value = float(item["value"][1])
            if math.isfinite(value):
                out.append((item["metric"], value))
        return out

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        """The sum of an instant vector, ``None`` when it is empty."""
        series = self.query(promql, at)
        return sum(v for _, v in series) if series else None

    def range(self, promql: str, start: float, end: float, step_s: float) -> list[tuple[dict, list]]:
        """A range query: ``[(labels, [(t, value), ...])]`` with NaN points dropped."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
        out = []
        for item in self._get("/api/v1/query_range", params)["result"]:
            points = [(float(t), float(v)) for t, v in item["values"] if math.isfinite(float(v))]
            out.append((item["metric"], points))
        return out

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=self.timeout_s) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False
