"""The bridge as plain manifests (infra/manifests/bridge): kustomization.yaml sets the image
by digest, the base's image-check skips do not survive into what is applied, and the
NetworkPolicy selects the bridge's pods. Rendering needs `kubectl` or `kustomize`
(tests/infra/run.sh builds kustomize when neither is on PATH)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

import tf

BRIDGE = tf.INFRA / "manifests" / "bridge"
IMAGE_CHECKS = {"CKV_K8S_14", "CKV_K8S_43"}  # tag fixed, image by digest


def docs_by_kind(docs) -> dict[str, dict]:
    return {d["kind"]: d for d in docs if d}


def base() -> dict[str, dict]:
    return docs_by_kind(yaml.safe_load_all((BRIDGE / "bridge.yaml").read_text()))


def kustomization() -> dict:
    return yaml.safe_load((BRIDGE / "kustomization.yaml").read_text())


def skipped_checks(obj: dict) -> dict[str, str]:
    """check → annotation key, for the checkov skip annotations of one object."""
    out = {}
    for key, value in (obj["metadata"].get("annotations") or {}).items():
        if any(p in key for p in tf.SKIP_ANNOTATION_PREFIXES):
            out[str(value).split("=", 1)[0]] = key
    return out


def rendered() -> dict[str, dict]:
    if shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(BRIDGE)]
    elif shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(BRIDGE)]
    else:
        pytest.fail("neither kubectl nor kustomize on PATH (bash tests/infra/run.sh builds kustomize)")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return docs_by_kind(yaml.safe_load_all(out.stdout))


def test_the_kustomization_sets_the_bases_image_by_digest():
    k = kustomization()
    assert k["resources"] == ["bridge.yaml"]
    (container,) = base()["Deployment"]["spec"]["template"]["spec"]["containers"]
    (image,) = k["images"]
    # The base names the image without tag or digest, for kustomize to replace.
    assert image["name"] == container["image"] and not set(":@") & set(container["image"])
    assert image["digest"].startswith("sha256:") and image["newName"]
    assert "newTag" not in image, "a tag can move: set the image by digest only"


def test_the_kustomization_drops_exactly_the_bases_image_check_skips():
    """The base skips the image checks for its unresolved name; the rendered Deployment has
    the digest, so it keeps no such skip and checkov's kustomize framework checks it."""
    skips = skipped_checks(base()["Deployment"])
    assert IMAGE_CHECKS <= set(skips)
    removed = set()
    for patch in kustomization()["patches"]:
        assert patch["target"]["kind"] == "Deployment"
        for op in yaml.safe_load(patch["patch"]):
            assert op["op"] == "remove"
            key = op["path"].removeprefix("/metadata/annotations/").replace("~1", "/").replace("~0", "~")
            removed.add(key)
    assert removed == {skips[c] for c in IMAGE_CHECKS}


def test_the_rendered_bridge_runs_its_image_by_digest_without_image_check_skips():
    docs = rendered()
    (image,) = kustomization()["images"]
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{image['newName']}@{image['digest']}"
    skips = skipped_checks(docs["Deployment"])
    assert not IMAGE_CHECKS & set(skips), skips
    # Everything else is the base's, untouched.
    assert set(docs) == set(base())
    assert set(skips) == set(skipped_checks(base()["Deployment"])) - IMAGE_CHECKS


def test_the_network_policy_selects_the_bridges_pods_and_opens_only_its_ports():
    docs = base()
    policy, deployment = docs["NetworkPolicy"], docs["Deployment"]
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    health = {p["containerPort"] for p in container["ports"] if p["name"] == "health"}
    (ingress,) = policy["spec"]["ingress"]
    assert "from" not in ingress and [(p["protocol"], p["port"]) for p in ingress["ports"]] == [("TCP", p) for p in health]
    assert {(p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]} == {
        ("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 80)
    }
    # Port 80 only to EKS Pod Identity's agent, never to the instance metadata service.
    (agent,) = [r for r in policy["spec"]["egress"] if any(p["port"] == 80 for p in r["ports"])]
    assert [t["ipBlock"]["cidr"] for t in agent["to"]] == ["169.254.170.23/32", "fd00:ec2::23/128"]
