"""A small client for Prometheus' HTTP query API (instant and range queries), as the release judges.

Every figure a release step is judged on comes from here: PromQL over the metrics the real server
exports, scraped by a real Prometheus, so the controller sees what the dashboards and alerts see.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

from common import exit_codes
from common.exit_codes import ExitError


class PrometheusUnavailable(ExitError):
    """Prometheus did not answer, or rejected a query (exit code 3)."""

    exit_code = exit_codes.UNAVAILABLE


Series = list[tuple[dict[str, str], float]]


class Prometheus:
    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str]) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error") or exc.reason
            except (OSError, ValueError, AttributeError):
                detail = exc.reason
            raise PrometheusUnavailable(f"Prometheus rejected {params.get('query')!r}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusUnavailable(f"cannot query Prometheus at {self.url}: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusUnavailable(f"Prometheus rejected {params.get('query')!r}: {body.get('error')}")
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
