"""Every YAML document under deploy/ against the Kubernetes OpenAPI schemas (kubernetes-validate).

Strict schemas: a field Kubernetes does not know (a typo, a field of a newer
version) fails. Every Kubernetes version the installed kubernetes-validate ships
from 1.29 on (native sidecars) is checked. kustomization.yaml files are no
Kubernetes objects: they are checked against their directory instead.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from deployfiles import DEPLOY, all_documents, documents, yaml_files
from kubernetes_validate.utils import all_versions
from packaging.version import Version

# Native sidecars (initContainers[].restartPolicy: Always) are on by default from 1.29.
FIRST_VERSION = Version("1.29")
VERSIONS = sorted({v for v in all_versions() if Version(v) >= FIRST_VERSION}, key=Version)

# Custom resources kubernetes-validate has no schema for. Listed one by one: any
# other kind without a schema fails the test rather than passing unchecked.
CUSTOM_RESOURCES = {
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "ClusterIssuer"),
}

OBJECTS = [d for d in all_documents() if d.kind != "Kustomization"]
KUSTOMIZATIONS = sorted(p.parent for p in yaml_files() if p.name == "kustomization.yaml")


def test_kubernetes_validate_ships_versions_with_native_sidecars():
    assert VERSIONS, f"kubernetes-validate {kubernetes_validate.__version__} has no schema for 1.29 or later"
    assert VERSIONS[0] == "1.29.0"


def test_deploy_has_objects_and_every_document_is_one():
    assert any(d.path.parent.name == "sidecar" for d in OBJECTS)
    for doc in all_documents():
        assert isinstance(doc.body, dict) and doc.body.get("apiVersion") and doc.kind, doc.id
    for doc in OBJECTS:
        assert doc.name, f"{doc.id}: metadata.name"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("doc", OBJECTS, ids=lambda d: d.id)
def test_object_matches_the_schema(doc, version):
    key = (doc.body["apiVersion"], doc.kind)
    try:
        kubernetes_validate.validate(doc.body, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        if key in CUSTOM_RESOURCES:
            pytest.skip(f"{key[1]} ({key[0]}) is a custom resource: kubernetes-validate has no schema for it")
        raise
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        pytest.fail(f"{doc.id} against Kubernetes {version}: {where}: {e.message}")


def test_strict_validation_refuses_an_unknown_field():
    """The check above would be worth little if the schemas let unknown fields through."""
    deployment = next(d.body for d in OBJECTS if d.kind == "Deployment"
                      and d.body["spec"]["template"]["spec"].get("initContainers"))  # the sidecar example
    spec = deployment["spec"]["template"]["spec"]
    broken = {**deployment, "spec": {**deployment["spec"], "template": {
        **deployment["spec"]["template"],
        "spec": {**spec, "initContainers": [{**spec["initContainers"][0], "restartPolicyy": "Always"}]},
    }}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def _referenced_files(k: dict) -> set[str]:
    """Files a kustomization uses other than as resources: patches and generator inputs."""
    out = set()
    for patch in k.get("patches") or ():
        if "path" in patch:
            out.add(patch["path"])
    out.update(k.get("patchesStrategicMerge") or ())
    for generator in (k.get("configMapGenerator") or ()) + (k.get("secretGenerator") or ()):
        for entry in generator.get("files") or ():
            out.add(entry.split("=", 1)[-1])
    return out


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kustomization_lists_every_manifest_and_only_existing_ones(directory: Path):
    k = documents(directory / "kustomization.yaml")[0].body
    assert k["apiVersion"].startswith("kustomize.config.k8s.io/") and k["kind"] == "Kustomization"
    resources = k.get("resources") or []
    assert len(resources) == len(set(resources)), "a resource listed twice"
    for entry in resources:
        target = directory / entry
        assert target.exists(), f"{entry} is listed but does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").exists(), f"{entry}: a directory without kustomization.yaml"
    manifests = {p.name for p in directory.iterdir()
                 if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml"}
    unlisted = manifests - {Path(r).name for r in resources if (directory / r).is_file()} - _referenced_files(k)
    assert not unlisted, f"in {directory.name}/ but not in its kustomization: {sorted(unlisted)}"
