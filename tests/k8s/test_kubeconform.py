"""Every rendered manifest validates strictly against its schema with kubeconform: Kubernetes'
own (kubernetes-validate's schemas) and the operators' (generated from their CRDs). A kind
without a schema is an error, never skipped."""

from __future__ import annotations

import json
import subprocess

from tests.k8s.render import Rendered
from tests.k8s.tools import Tools, missing


def test_every_manifest_is_valid(rendered: Rendered, tools: Tools) -> None:
    missing(tools.kubeconform, tools.core_schemas / ".done", tools.crd_dir / ".done")
    result = subprocess.run(
        [
            str(tools.kubeconform),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-kubernetes-version",
            tools.kube_version,
            "-schema-location",
            f"{tools.core_schemas}/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
            "-schema-location",
            f"{tools.crd_schemas}/{{{{.Group}}}}/{{{{.ResourceKind}}}}_{{{{.ResourceAPIVersion}}}}.json",
            "-",
        ],
        input=rendered.text,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    report = json.loads(result.stdout)
    problems = [
        f"{item['kind']} {item['name']}: {item['status']} {item.get('msg', '')}"
        for item in report.get("resources", [])
        if item["status"] != "statusValid"
    ]
    assert not problems, "\n".join(problems)
    assert result.returncode == 0, result.stderr
    summary = report["summary"]
    assert summary["skipped"] == 0
    assert summary["valid"] == len(rendered.documents)
