"""JSON schemas for kubeconform, built offline from what the registries publish.

``core WHEEL VERSION TARGET``: Kubernetes' schemas from the kubernetes-validate wheel (PyPI).
Its strict schemas point every ``$ref`` at ``/api/_definitions.json`` under a web ``$id``;
without the ``$id`` and with the reference made relative, they resolve from the directory.

``crds TARGET CRD.yaml...``: one schema per served version of each CustomResourceDefinition,
laid out as ``<group>/<kind>_<version>.json`` (lower-case kind). Strict like the core ones:
an object that lists its properties accepts no others unless the CRD says it keeps unknown
fields, so a misspelt option fails here instead of being pruned silently by the API server.
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

WHEEL_SCHEMAS = "kubernetes_validate/kubernetes-json-schema"
DEFINITIONS = "_definitions.json"


def core(wheel: Path, kube_version: str, target: Path) -> None:
    major_minor = ".".join(kube_version.split(".")[:2])
    prefix = f"{WHEEL_SCHEMAS}/v{major_minor}.0-local-strict/"
    target.mkdir(parents=True, exist_ok=True)
    written = 0
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not name.startswith(prefix) or not name.endswith(".json"):
                continue
            schema = json.loads(archive.read(name))
            schema.pop("$id", None)
            (target / name[len(prefix) :]).write_text(json.dumps(_relative_refs(schema)))
            written += 1
    if not written:
        raise SystemExit(f"{wheel} has no schemas for Kubernetes {major_minor} ({prefix})")


def _relative_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                value.replace(f"/api/{DEFINITIONS}", DEFINITIONS, 1)
                if key == "$ref" and isinstance(value, str)
                else _relative_refs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_relative_refs(item) for item in node]
    return node


def crds(target: Path, files: list[Path]) -> None:
    count = 0
    for crd in _crd_documents(files):
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"].lower()
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            schema = version.get("schema", {}).get("openAPIV3Schema")
            if schema is None:
                raise SystemExit(f"{group}/{kind} {version['name']} has no openAPIV3Schema")
            out = target / group / f"{kind}_{version['name']}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(strict(schema)))
            count += 1
    if not count:
        raise SystemExit("no CustomResourceDefinitions found")


def _crd_documents(files: list[Path]) -> Iterator[dict[str, Any]]:
    for file in files:
        for document in yaml.safe_load_all(file.read_text()):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                yield document


def strict(node: Any) -> Any:
    """The CRD's OpenAPI v3 schema as a JSON schema that refuses unknown fields."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: strict(value) for key, value in node.items()}
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.pop("nullable", False) and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in schema and "additionalProperties" not in schema and not keeps_unknown:
        schema["additionalProperties"] = False
    return schema


def main(argv: list[str]) -> None:
    if len(argv) == 4 and argv[0] == "core":
        core(Path(argv[1]), argv[2], Path(argv[3]))
    elif len(argv) >= 3 and argv[0] == "crds":
        crds(Path(argv[1]), [Path(file) for file in argv[2:]])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
