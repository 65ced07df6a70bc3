"""The Terraform module against the Rust code it deploys: the functions, the environment
they read, the AWS calls they make (→ IAM), the metric they emit (→ alarms), the events they
send (→ rules), and the in-cluster bridge against its reference manifest."""

import json
import re
import subprocess
import warnings
from pathlib import Path

import pytest
import yaml

import tf

# --------------------------------------------------------------------------- functions

# Crates under functions/ that are not deployed by the module, and why.
NOT_DEPLOYED = {
    "cli": "the day-2 command-line tool and local demo; runs with a person's credentials",
    "memkube": "in-memory Kubernetes API server for tests and the demo",
}
BRIDGE = "bridge"  # a binary crate deployed as a Kubernetes Deployment, not a Lambda


def lambda_crates() -> set[str]:
    return {
        name
        for name, manifest in tf.crates().items()
        if tf.is_binary(name, manifest) and "lambda_runtime" in manifest.get("dependencies", {})
    }


def module_functions() -> set[str]:
    return set(tf.module_locals()["functions"])


def test_one_lambda_per_lambda_crate():
    crates = lambda_crates()
    assert crates, "no Lambda crates found"
    assert module_functions() == crates, (
        f"crates running on lambda_runtime: {sorted(crates)}; functions in the module: {sorted(module_functions())}"
    )
    names = set(re.findall(r'"(\w+)"', tf.module_locals()["function_names"]))
    assert names == crates, "local.function_names must list the same functions"
    (fn,) = tf.resources("aws_lambda_function").values()
    assert fn["for_each"] == "${local.functions}"


def test_every_crate_is_accounted_for():
    for name, manifest in tf.crates().items():
        if name in lambda_crates() or name == BRIDGE or name in NOT_DEPLOYED:
            continue
        assert not tf.is_binary(name, manifest), f"functions/{name} is a binary the module does not know: deploy it or add it to NOT_DEPLOYED"


def test_build_script_builds_every_lambda():
    script = tf.ROOT / "scripts" / "build-lambdas.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    out = subprocess.run(["bash", str(script), "--dry-run"], check=True, capture_output=True, text=True).stdout.split()
    assert out[:3] == ["cargo", "lambda", "build"]
    assert {"--release", "--arm64"} <= set(out)
    assert out[out.index("--output-format") + 1] == "zip"
    assert out[out.index("--lambda-dir") + 1] == str(tf.ROOT / "target" / "lambda")
    packages = {out[i + 1] for i, a in enumerate(out) if a == "-p"}
    assert packages == {tf.crates()[c]["package"]["name"] for c in lambda_crates()}
    # The module's default zip directory is the same place.
    assert tf.module_locals()["lambda_zip_dir"] == '${coalesce(var.lambda_zip_dir, "${path.module}/../../../target/lambda")}'
    assert (tf.MODULE / "../../../target/lambda").resolve() == tf.ROOT / "target" / "lambda"


def test_every_function_has_async_retries_and_a_dead_letter_queue():
    (cfg,) = tf.resources("aws_lambda_function_event_invoke_config").values()
    assert cfg["for_each"] == "${local.function_names}"
    (dest,) = cfg["destination_config"]
    (on_failure,) = dest["on_failure"]
    assert on_failure["destination"] == "${aws_sqs_queue.dlq[each.key].arn}"
    (queue,) = tf.resources("aws_sqs_queue").values()
    assert queue["sqs_managed_sse_enabled"] is True or "kms_master_key_id" in queue


# --------------------------------------------------------------------------- environment

# What each deployed component gets (README: Function configuration), and nothing else.
EXPECTED_ENV = {
    "scheduler": {"STASHLESS_EKS_CLUSTER", "STASHLESS_NAMESPACES", "STASHLESS_EVENT_BUS", "STASHLESS_STARTING_DEADLINE_SECONDS"},
    "backup": {
        "STASHLESS_EKS_CLUSTER", "STASHLESS_NAMESPACES", "STASHLESS_PART_SIZE_MIB", "STASHLESS_PARTS_IN_FLIGHT", "STASHLESS_PUSHGATEWAY_URL",
        "STASHLESS_ESCROW_KMS_KEY_ID", "STASHLESS_PRE_RESTORE_KEEP_HOURS",
    },
    "restore": {"STASHLESS_EKS_CLUSTER", "STASHLESS_NAMESPACES", "STASHLESS_PUSHGATEWAY_URL", "STASHLESS_ESCROW_KMS_KEY_ID", "STASHLESS_PRE_RESTORE_KEEP_HOURS"},
    "bridge": {"STASHLESS_EVENT_BUS", "STASHLESS_NAMESPACES", "STASHLESS_HEALTH_ADDR", "AWS_REGION"},
}
# Set only when the variable is non-empty.
OPTIONAL_ENV = {"STASHLESS_PUSHGATEWAY_URL"}

# Read by the code, never set by the module.
LOCAL_ONLY = {
    "STASHLESS_KUBE_URL": "a plain API server URL for local runs and tests; on AWS the cluster comes from STASHLESS_EKS_CLUSTER",
    "STASHLESS_KUBE_TOKEN": "goes with STASHLESS_KUBE_URL",
    "STASHLESS_KUBE_CA_FILE": "goes with STASHLESS_KUBE_URL",
    "STASHLESS_BAO": "path of the bao binary for the demo and tests",
    "STASHLESS_EMF": "forces EMF lines outside Lambda; inside Lambda they are always printed",
}
# Never set by the module, whatever reads them.
FORBIDDEN = set(LOCAL_ONLY) | {"PROMETHEUS_PUSHGATEWAY_URL", "HOSTNAME"}
FORBIDDEN_LAMBDA = {"STASHLESS_HEALTH_ADDR"}

# Set by the module by design before the code reads it (kept only while no code reads it).
PENDING_IN_CODE = {
    "STASHLESS_EKS_CLUSTER": "EKS config resolution (eks:DescribeCluster + presigned STS token)",
}

ENV_NAME = re.compile(r"\bSTASHLESS_[A-Z][A-Z0-9_]*[A-Z0-9]\b")


def env_in_code() -> dict[str, set[Path]]:
    """STASHLESS_* names in string literals of production Rust code → files."""
    found: dict[str, set[Path]] = {}
    for path, (raw, masked) in tf.rust_sources().items():
        for _, s in tf.string_literals(raw, masked):
            for name in ENV_NAME.findall(s):
                found.setdefault(name, set()).add(path)
    return found


def module_env() -> dict[str, set[str]]:
    fns = tf.module_locals()["functions"]
    env = {name: tf.hcl_keys(body["environment"]) for name, body in fns.items()}
    (deployment,) = tf.resources("kubernetes_deployment_v1").values()
    (spec,) = deployment["spec"]
    (template,) = spec["template"]
    (pod,) = template["spec"]
    (container,) = pod["container"]
    env["bridge"] = {tf.unquote(e["name"]) for e in container["env"]}
    return env


def test_lambda_environment_is_what_the_functions_read():
    (fn,) = tf.resources("aws_lambda_function").values()
    (environment,) = fn["environment"]
    assert environment["variables"] == "${each.value.environment}"
    assert module_env() == EXPECTED_ENV


def test_pushgateway_is_only_set_when_given():
    assert "STASHLESS_PUSHGATEWAY_URL" not in tf.hcl_keys(tf.module_locals()["common_environment"])
    expr = tf.module_locals()["pushgateway_environment"]
    assert re.search(r'var\.pushgateway_url == ""\s*\?\s*\{\}', expr), expr


def test_escrow_environment_is_the_escrow_key_and_the_undo_retention():
    """Backup and restore (Settings::from_env, src/context.rs) get the escrow key's ARN and
    pre_restore_keep_hours; the scheduler neither (it never touches keys or snapshots)."""
    loc = tf.module_locals()
    env = {k: v for k, v in loc["escrow_environment"].items() if not k.startswith("__")}
    assert env == {
        "STASHLESS_ESCROW_KMS_KEY_ID": "${local.escrow_kms_key_arn}",
        "STASHLESS_PRE_RESTORE_KEEP_HOURS": "${tostring(var.pre_restore_keep_hours)}",
    }, env
    for fn in ("backup", "restore"):
        assert "local.escrow_environment" in loc["functions"][fn]["environment"], fn
    assert "escrow_environment" not in loc["functions"]["scheduler"]["environment"]
    assert not {k for k in tf.hcl_keys(loc["common_environment"]) if "ESCROW" in k or "PRE_RESTORE" in k}, "the scheduler must not get the escrow key"
    # The module's own key unless the caller names one; never the logs or the bucket key.
    escrow = (tf.MODULE / "escrow.tf").read_text()
    assert re.search(r"create_escrow_kms_key\s*=\s*var\.escrow_kms_key_arn == null", escrow)
    assert re.search(r"escrow_kms_key_arn\s*=\s*local\.create_escrow_kms_key \? aws_kms_key\.escrow\[0\]\.arn : var\.escrow_kms_key_arn", escrow)
    defaults = {n: b.get("default") for n, b, _ in tf.module_blocks("variable")}
    assert defaults["pre_restore_keep_hours"] == 168, "the code's default (context.rs: 7 days)"
    context_rs = (tf.FUNCTIONS / "stashless" / "src" / "context.rs").read_text()
    assert "Duration::from_secs(7 * 24 * 3600)" in context_rs, "the code's default undo retention changed: update pre_restore_keep_hours' default"
    assert re.search(r'env_num\("STASHLESS_PRE_RESTORE_KEEP_HOURS"\)', context_rs), "the code no longer reads the hours as a number"


def test_module_sets_nothing_local_or_forbidden():
    for component, names in module_env().items():
        bad = names & FORBIDDEN
        assert not bad, f"{component} must not get {bad}"
        assert not {n for n in names if n.startswith("AWS_LAMBDA_")}
        if component != "bridge":
            assert not names & FORBIDDEN_LAMBDA, f"{component} must not get {names & FORBIDDEN_LAMBDA}"


def test_every_variable_in_the_code_is_set_or_local_only():
    deployed = set().union(*EXPECTED_ENV.values())
    for name, files in env_in_code().items():
        where = ", ".join(str(p.relative_to(tf.ROOT)) for p in sorted(files))
        assert name in deployed or name in LOCAL_ONLY, f"{name} (read in {where}) is neither set by the module nor listed in LOCAL_ONLY"


def test_variables_read_by_a_component_are_set_for_it():
    """Files that belong to one component: its own crate, and the library module named after
    it (functions/stashless/src/<component>.rs)."""
    for name, files in env_in_code().items():
        if name in LOCAL_ONLY:
            continue
        for path in files:
            crate = tf.crate_of(path)
            owner = crate if crate in EXPECTED_ENV else path.stem if crate == "stashless" and path.stem in EXPECTED_ENV else None
            if owner:
                assert name in EXPECTED_ENV[owner], f"{path.relative_to(tf.ROOT)} reads {name}, but the module does not set it for {owner}"


def test_every_variable_the_module_sets_is_read():
    in_code = env_in_code()
    for component, names in module_env().items():
        for name in names:
            if not name.startswith("STASHLESS_"):
                continue  # AWS_REGION: read by the AWS SDK
            if name in in_code:
                continue
            assert name in PENDING_IN_CODE, f"the module sets {name} for {component}, but no code reads it"
            warnings.warn(f"{name} is not read by the code yet (set by design: {PENDING_IN_CODE[name]})")


# --------------------------------------------------------------------------- IAM

# SDK operation → IAM actions it is authorised by. An operation not listed fails the test.
SDK_ACTIONS = {
    # aws-sdk-s3
    "create_multipart_upload": {"s3:PutObject"},
    "upload_part": {"s3:PutObject"},
    "complete_multipart_upload": {"s3:PutObject"},
    "put_object": {"s3:PutObject"},
    "abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "get_object": {"s3:GetObject"},
    "head_object": {"s3:GetObject"},
    "list_objects_v2": {"s3:ListBucket"},
    "list_objects": {"s3:ListBucket"},
    "head_bucket": {"s3:ListBucket"},
    "delete_object": {"s3:DeleteObject"},
    "delete_objects": {"s3:DeleteObject"},
    "list_multipart_uploads": {"s3:ListBucketMultipartUploads"},
    "list_parts": {"s3:ListMultipartUploadParts"},
    "copy_object": {"s3:PutObject", "s3:GetObject"},
    # aws-sdk-eventbridge
    "put_events": {"events:PutEvents"},
    # aws-sdk-eks
    "describe_cluster": {"eks:DescribeCluster"},
    # aws-sdk-sts: GetCallerIdentity needs no permission (Vault AWS auth, EKS tokens)
    "get_caller_identity": set(),
    # aws-sdk-kms: the escrow envelope (src/keys.rs Sealer) and KubeVault's awsKmsSsm values
    "generate_data_key": {"kms:GenerateDataKey"},
    "decrypt": {"kms:Decrypt"},
    "encrypt": {"kms:Encrypt"},
    # aws-sdk-ssm: KubeVault's awsKmsSsm unsealer store (src/keys.rs read/write)
    "get_parameters": {"ssm:GetParameters"},
    "put_parameter": {"ssm:PutParameter"},
    "delete_parameters": {"ssm:DeleteParameters"},
}

# Which data-plane actions each component is meant to have (the code is shared, so which
# function calls what is a design decision; the tests below hold the policies to it).
# KMS and SSM are held separately below, by the resource they are granted on. Restore writes
# too: it snapshots its target first (the undo, src/snapshot.rs, shared with backup), and
# removes what it wrote when that fails; it never lists open uploads (backup's cleanup).
DESIGN = {
    "scheduler": {"events:PutEvents", "eks:DescribeCluster"},
    "backup": {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListBucket", "s3:ListBucketMultipartUploads", "eks:DescribeCluster"},
    "restore": {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListBucket", "eks:DescribeCluster"},
    "bridge": {"events:PutEvents"},
}

# On the escrow key, always (only with the encryption context stashless:purpose =
# unseal-keys): backup seals (GenerateDataKey) and may not open; restore opens (Decrypt)
# and seals the escrow of its undo snapshot (GenerateDataKey: without it the undo of a
# forced restore could not bring back the keys the restore overwrote).
ESCROW_KMS = {"backup": {"kms:GenerateDataKey"}, "restore": {"kms:Decrypt", "kms:GenerateDataKey"}}
# With unsealer_ssm_parameter_arns / unsealer_kms_key_arns set (KubeVault awsKmsSsm): backup
# reads the keys to escrow them; restore reads them (its undo's escrow) and writes a forced
# restore's. On the unsealer keys only with KubeVault's context Tool = vault-unsealer.
UNSEALER_SSM = {"backup": {"ssm:GetParameters"}, "restore": {"ssm:GetParameters", "ssm:PutParameter", "ssm:DeleteParameters"}}
UNSEALER_KMS = {"backup": {"kms:Decrypt"}, "restore": {"kms:Decrypt", "kms:Encrypt"}}
ESCROW_CONDITION = {"StringEquals": {"kms:EncryptionContext:stashless:purpose": "unseal-keys"}}
UNSEALER_CONDITION = {"StringEquals": {"kms:EncryptionContext:Tool": "vault-unsealer"}}
NO_UNSEALER = {"unsealer_ssm_parameter_arns": "", "unsealer_kms_key_arns": ""}

# Granted without a call in the code, and why.
INFRASTRUCTURE = {
    "logs:CreateLogStream": "Lambda writes the function's output to its log group with the execution role",
    "logs:PutLogEvents": "Lambda writes the function's output to its log group with the execution role",
    "ec2:CreateNetworkInterface": "Lambda attaches the function to the VPC (Vault and the EKS endpoint are in it)",
    "ec2:DescribeNetworkInterfaces": "Lambda VPC attachment",
    "ec2:DescribeSubnets": "Lambda VPC attachment",
    "ec2:DeleteNetworkInterface": "Lambda VPC attachment",
    "ec2:AssignPrivateIpAddresses": "Lambda VPC attachment",
    "ec2:UnassignPrivateIpAddresses": "Lambda VPC attachment",
    "sqs:SendMessage": "Lambda sends failed asynchronous invocations to the function's DLQ with the execution role",
}
# SSE-KMS: what an S3 action needs from the bucket key.
KMS_FOR_S3 = {
    "s3:PutObject": {"kms:GenerateDataKey", "kms:Decrypt"},  # multipart parts are encrypted with the upload's data key
    "s3:GetObject": {"kms:Decrypt"},
}
GRANTED_BY_DESIGN = {
    "eks:DescribeCluster": "EKS config resolution (endpoint and CA of STASHLESS_EKS_CLUSTER)",
}


def sdk_operations() -> dict[str, set[Path]]:
    ops: dict[str, set[Path]] = {}
    for path, (raw, masked) in tf.rust_sources().items():
        if tf.crate_of(path) in NOT_DEPLOYED or not re.search(r"\baws_sdk_\w+", raw):
            continue
        for _, op in tf.sdk_calls(masked):
            ops.setdefault(op, set()).add(path)
    return ops


def actions_called() -> set[str]:
    out = set()
    for op, files in sdk_operations().items():
        where = ", ".join(str(p.relative_to(tf.ROOT)) for p in sorted(files))
        assert op in SDK_ACTIONS, f"AWS SDK operation {op} (in {where}) has no IAM mapping: add it to SDK_ACTIONS"
        out |= SDK_ACTIONS[op]
    return out


def components() -> list[str]:
    return sorted(DESIGN)


def rendered(component: str, **overrides) -> dict:
    return tf.policy(component, **overrides)


def resource_kind(resources) -> str:
    """What a statement's resources are, by the template variable they come from."""
    v = tf.SAMPLE_VARS
    resources = set(resources) if isinstance(resources, (set, list)) else {resources}
    for kind, want in [
        ("bucket key", {v["kms_key_arn"]}),
        ("escrow key", {v["escrow_kms_key_arn"]}),
        ("unsealer keys", set(json.loads(v["unsealer_kms_key_arns"]))),
        ("unsealer parameters", set(json.loads(v["unsealer_ssm_parameter_arns"]))),
    ]:
        if resources == want:
            return kind
    return "other"


def grants_on(doc: dict, kind: str) -> set[str]:
    return {a for st in tf.statements(doc) if resource_kind(st["Resource"]) == kind for a in tf.as_list(st["Action"])}


def test_sdk_scan_finds_the_known_call_sites():
    ops = sdk_operations()
    for op in [
        "create_multipart_upload", "upload_part", "complete_multipart_upload", "abort_multipart_upload", "get_object", "put_events",
        "generate_data_key", "decrypt", "encrypt", "get_parameters", "put_parameter", "delete_parameters",
    ]:
        assert op in ops, f"the SDK call scan no longer finds {op}: the scanner is broken"


@pytest.mark.parametrize("unsealer", ["ssm-and-kms", "ssm-only", "kms-only", "none"])
@pytest.mark.parametrize("kms", [True, False], ids=["sse-kms", "sse-s3"])
@pytest.mark.parametrize("component", components())
def test_policy_templates_render_to_valid_policies(component, kms, unsealer):
    overrides = {} if kms else {"kms_key_arn": ""}
    if unsealer in ("kms-only", "none"):
        overrides["unsealer_ssm_parameter_arns"] = ""
    if unsealer in ("ssm-only", "none"):
        overrides["unsealer_kms_key_arns"] = ""
    doc = rendered(component, **overrides)
    assert doc["Version"] == "2012-10-17"
    sids = [st.get("Sid") for st in tf.statements(doc)]
    assert all(sids) and len(sids) == len(set(sids)), f"{component}: every statement needs a unique Sid"
    keys = component in ("backup", "restore")
    assert bool(grants_on(doc, "bucket key")) == (kms and keys)
    assert bool(grants_on(doc, "escrow key")) == keys
    assert bool(grants_on(doc, "unsealer parameters")) == (keys and unsealer in ("ssm-and-kms", "ssm-only"))
    assert bool(grants_on(doc, "unsealer keys")) == (keys and unsealer in ("ssm-and-kms", "kms-only"))
    assert {a for a in tf.granted_actions(doc) if a.startswith("kms:")} == (
        grants_on(doc, "bucket key") | grants_on(doc, "escrow key") | grants_on(doc, "unsealer keys")
    ), f"{component}: a KMS grant on something else"


def test_every_call_the_code_makes_is_granted():
    granted = set().union(*(tf.granted_actions(rendered(c)) for c in components()))
    missing = actions_called() - granted
    assert not missing, f"the code calls {missing} but no policy grants it"


@pytest.mark.parametrize("component", components())
def test_policy_grants_exactly_the_design(component):
    doc = rendered(component)
    granted = tf.granted_actions(doc)
    held = {"bucket key", "escrow key", "unsealer keys", "unsealer parameters"}
    data_plane = {
        a for st in tf.statements(doc) if resource_kind(st["Resource"]) not in held for a in tf.as_list(st["Action"]) if a not in INFRASTRUCTURE
    }
    assert data_plane == DESIGN[component]
    kms_needed = set().union(*(KMS_FOR_S3.get(a, set()) for a in data_plane))
    assert grants_on(doc, "bucket key") == kms_needed
    assert grants_on(doc, "escrow key") == ESCROW_KMS.get(component, set())
    assert grants_on(doc, "unsealer parameters") == UNSEALER_SSM.get(component, set())
    assert grants_on(doc, "unsealer keys") == UNSEALER_KMS.get(component, set())
    if component != "bridge":
        assert set(INFRASTRUCTURE) <= granted, f"{component} lacks {set(INFRASTRUCTURE) - granted}"


def designed(component: str) -> set[str]:
    return DESIGN[component] | ESCROW_KMS.get(component, set()) | UNSEALER_SSM.get(component, set()) | UNSEALER_KMS.get(component, set())


def test_nothing_is_granted_that_no_code_calls():
    called = actions_called()
    for component in components():
        for action in designed(component):
            if action in called:
                continue
            assert action in GRANTED_BY_DESIGN, f"{component} is granted {action}, which no code calls"
            warnings.warn(f"{action} granted by design ({GRANTED_BY_DESIGN[action]}); no call site found yet")


@pytest.mark.parametrize("component", components())
def test_policy_resources_are_scoped(component):
    v = tf.SAMPLE_VARS
    for st in tf.statements(rendered(component)):
        actions = set(tf.as_list(st["Action"]))
        resources = set(tf.as_list(st["Resource"]))
        if resources == {"*"}:
            assert actions <= {a for a in INFRASTRUCTURE if a.startswith("ec2:")}, f"{component}: {actions} on *"
            continue
        for a in actions:
            service = a.split(":")[0]
            if a == "s3:ListBucket":
                assert resources == {v["bucket_arn"]}
                assert st["Condition"]["StringLike"]["s3:prefix"] == f"{v['prefix']}*"
            elif a == "s3:ListBucketMultipartUploads":
                # A bucket-level action with no s3:prefix condition key: the bucket, nothing wider.
                assert resources == {v["bucket_arn"]}
            elif service == "s3":
                assert resources == {f"{v['bucket_arn']}/{v['prefix']}*"}
            elif service == "kms":
                kind = resource_kind(resources)
                assert kind in ("bucket key", "escrow key", "unsealer keys"), f"{component}: {a} on {resources}"
                if kind == "escrow key":
                    assert st.get("Condition") == ESCROW_CONDITION, f"{component}: {a} on the escrow key without its context"
                elif kind == "unsealer keys":
                    assert st.get("Condition") == UNSEALER_CONDITION, f"{component}: {a} on an unsealer key without its context"
            elif service == "ssm":
                assert resource_kind(resources) == "unsealer parameters", f"{component}: {a} on {resources}"
            elif service == "eks":
                assert resources == {v["cluster_arn"]}
            elif service == "events":
                assert resources == {v["bus_arn"]}
            elif service == "logs":
                assert resources == {f"{v['log_group_arn']}:*"}
            elif service == "sqs":
                assert resources == {v["dlq_arn"]}
            else:
                pytest.fail(f"{component}: unexpected action {a}")


def test_escrow_key_seals_in_backup_and_opens_only_in_restore():
    """Backup may seal escrows, never open them; restore opens them (and seals its undo's);
    the scheduler and the bridge have nothing on the key. Every grant is bound to the
    encryption context the code sends."""
    escrow = tf.SAMPLE_VARS["escrow_kms_key_arn"]
    for component in components():
        doc = rendered(component)
        on_key = [st for st in tf.statements(doc) if escrow in tf.as_list(st["Resource"])]
        actions = {a for st in on_key for a in tf.as_list(st["Action"])}
        if component == "backup":
            assert "kms:GenerateDataKey" in actions and "kms:Decrypt" not in actions, actions
        elif component == "restore":
            assert "kms:Decrypt" in actions, actions
            assert "kms:GenerateDataKey" in actions, "restore seals the escrow of its undo snapshot (src/snapshot.rs)"
        else:
            assert not on_key, f"{component} may use the escrow key"
        for st in on_key:
            assert tf.as_list(st["Resource"]) == [escrow], f"{component}: the escrow key shares a statement: {st}"
            assert st.get("Condition") == ESCROW_CONDITION, st
        assert not {a for a in tf.granted_actions(doc) if a.startswith("kms:") and ("*" in a)}, f"{component}: KMS wildcard action"
    # The context the code binds (src/keys.rs encryption_context) is the one the grants name.
    keys_rs = (tf.FUNCTIONS / "stashless" / "src" / "keys.rs").read_text()
    ((key, value),) = ESCROW_CONDITION["StringEquals"].items()
    purpose = key.removeprefix("kms:EncryptionContext:")
    assert re.search(rf'\("{re.escape(purpose)}"\.to_string\(\),\s*"{re.escape(value)}"\.to_string\(\)\)', keys_rs), "keys.rs no longer sends stashless:purpose = unseal-keys"
    ((key, value),) = UNSEALER_CONDITION["StringEquals"].items()
    tool = key.removeprefix("kms:EncryptionContext:")
    assert re.search(rf'KUBEVAULT_KMS_CONTEXT:\s*\(&str,\s*&str\)\s*=\s*\("{tool}",\s*"{value}"\)', keys_rs), "keys.rs no longer uses KubeVault's Tool = vault-unsealer"


def test_unsealer_grants_exist_only_when_the_variables_are_set():
    """SSM and the unsealer's KMS keys: nothing by default; only what is listed, when listed."""
    defaults = {n: b.get("default") for n, b, _ in tf.module_blocks("variable")}
    assert defaults["unsealer_ssm_parameter_arns"] == [] and defaults["unsealer_kms_key_arns"] == []
    vars_expr = tf.module_locals()["policy_template_vars"]
    for name in ("unsealer_ssm_parameter_arns", "unsealer_kms_key_arns"):
        assert re.search(rf'{name}\s*=\s*length\(var\.{name}\) == 0 \? "" : jsonencode\(var\.{name}\)', vars_expr), f"{name}: the module must pass \"\" for an empty list"
    for component in components():
        bare = rendered(component, **NO_UNSEALER)
        assert not {a for a in tf.granted_actions(bare) if a.startswith("ssm:")}, component
        assert not grants_on(bare, "unsealer keys"), component
        full = rendered(component)
        if component in UNSEALER_SSM:
            ssm = [st for st in tf.statements(full) if any(a.startswith("ssm:") for a in tf.as_list(st["Action"]))]
            assert ssm and all(st["Resource"] == json.loads(tf.SAMPLE_VARS["unsealer_ssm_parameter_arns"]) for st in ssm)
        else:
            assert not {a for a in tf.granted_actions(full) if a.startswith("ssm:")}, f"{component} gets SSM"
            assert not grants_on(full, "unsealer keys"), f"{component} gets an unsealer key"


def test_no_permission_for_sts_get_caller_identity():
    for component in components():
        assert not {a for a in tf.granted_actions(rendered(component)) if a.startswith("sts:")}


def test_module_renders_each_function_with_its_own_template():
    policy = tf.resources("aws_iam_role_policy")["function"]
    assert "policies/${each.key}.json.tftpl" in policy["policy"]
    vars_expr = tf.module_locals()["policy_template_vars"]
    for name in tf.SAMPLE_VARS:
        assert re.search(rf"\b{name}\s*=", vars_expr), f"template variable {name} is not passed by the module"


# --------------------------------------------------------------------------- metrics

def test_backup_age_alarm_matches_the_emf_the_code_emits():
    loc = tf.module_locals()
    namespace, metric, dim = (tf.unquote(loc[k]) for k in ("emf_namespace", "emf_backup_metric", "emf_backup_dim_key"))
    metrics_rs = (tf.FUNCTIONS / "stashless" / "src" / "metrics.rs").read_text()
    assert re.search(rf'"Namespace"\s*:\s*"{re.escape(namespace)}"', metrics_rs), "EMF namespace differs from metrics.rs"
    # The backup's EMF line is built by metrics::backup_emf (what backup.rs prints).
    emf = re.search(r"pub fn backup_emf\(.*?\n}\n", metrics_rs, re.S)
    assert emf, "metrics.rs no longer has backup_emf"
    body = emf.group(0)
    backup_rs = (tf.FUNCTIONS / "stashless" / "src" / "backup.rs").read_text()
    assert "metrics::backup_emf(" in backup_rs, "backup.rs no longer prints the backup EMF line"
    assert re.search(rf'Some\(\(\s*"{re.escape(metric)}"', body), f"backup_emf does not emit {metric}"
    dims = re.search(r"emf_line\(\s*&\[(.*?)\]\s*,", body, re.S)
    assert dims, "backup_emf no longer calls emf_line"
    keys = re.findall(r'\(\s*"(\w+)"\s*,', dims.group(1))
    assert keys == [dim], f"backup_emf emits dimensions {keys}, the alarm uses [{dim}]"
    assert 'format!("{namespace}/{config}")' in dims.group(1), "the dimension value is no longer <namespace>/<name>"
    alarm = tf.resources("aws_cloudwatch_metric_alarm")["backup_age"]
    assert alarm["namespace"] == "${local.emf_namespace}"
    assert alarm["metric_name"] == "${local.emf_backup_metric}"
    assert tf.unquote(alarm["treat_missing_data"]) == "breaching"
    assert tf.unquote(alarm["statistic"]) == "Sum"


# --------------------------------------------------------------------------- events


def rule_patterns() -> dict[str, dict]:
    """Route name → event pattern, evaluated from local.routes as the module builds it."""
    loc = tf.module_locals()
    source = tf.unquote(loc["event_source"])
    out = {}
    for name, r in loc["routes"].items():
        kind = tf.unquote(r["kind"])
        changes = [tf.unquote(c) for c in r["changes"]]
        out[name] = {"source": [source], "detail-type": [f"{kind} {c}" for c in changes], "detail": {"kind": [kind]}}
    return out


def matches(pattern: dict, event: dict) -> bool:
    for key, want in pattern.items():
        if isinstance(want, dict):
            if not isinstance(event.get(key), dict) or not matches(want, event[key]):
                return False
        elif event.get(key) not in want:
            return False
    return True


def test_rule_pattern_is_built_as_the_test_assumes():
    (rule,) = tf.resources("aws_cloudwatch_event_rule").values()
    pattern = rule["event_pattern"]
    for needle in ["local.event_source", '"detail-type"', "each.value.kind} ${c}", "kind = [each.value.kind]"]:
        assert needle in pattern, f"event_pattern changed ({needle}): update rule_patterns()"
    (target,) = tf.resources("aws_cloudwatch_event_target").values()
    assert target["arn"] == "${aws_lambda_function.this[each.key].arn}"
    assert target["retry_policy"] and target["dead_letter_config"]


def test_source_matches_the_code():
    dispatch = (tf.FUNCTIONS / "stashless" / "src" / "dispatch.rs").read_text()
    m = re.search(r'pub const SOURCE: &str = "([^"]+)"', dispatch)
    assert m and m.group(1) == tf.unquote(tf.module_locals()["event_source"])


def test_sample_events_reach_their_function():
    patterns = rule_patterns()
    seen = 0
    for path in sorted((tf.ROOT / "events").glob("*/*.json")):
        event = json.loads(path.read_text())
        if not isinstance(event, dict) or event.get("source") != tf.unquote(tf.module_locals()["event_source"]):
            continue
        seen += 1
        target = path.parent.name
        routed = [name for name, p in patterns.items() if matches(p, event)]
        assert routed == [target], f"{path.relative_to(tf.ROOT)} goes to {routed}, expected [{target}]"
    assert seen >= 3


def test_every_change_the_code_sends_is_routed():
    patterns = rule_patterns()
    sent = set()
    for path, (raw, masked) in tf.rust_sources().items():
        for m in re.finditer(r"Change::(?:from_ref|of)\(", masked):
            # the last string literal argument of the call
            end = masked.find(")", m.end())
            args = raw[m.end() : end]
            sent |= set(re.findall(r'"(Added|Modified|Sweep|Deleted)"', args))
    sent |= {"Added", "Modified"}  # session_change() picks one of these for sessions
    sent.discard("Deleted")  # never dispatched (forget())
    for route, kind in [("backup", "BackupSession"), ("restore", "RestoreSession")]:
        for change in sent:
            assert f"{kind} {change}" in patterns[route]["detail-type"], f"{kind} {change} events are not routed"
    assert "BackupConfiguration Modified" in patterns["scheduler"]["detail-type"]


# --------------------------------------------------------------------------- Kubernetes


def rbac_functions() -> list[str]:
    return sorted(re.findall(r'"(\w+)"', tf.module_locals()["function_names"]))


def rbac_rules(function: str) -> list[dict]:
    doc = yaml.safe_load((tf.MODULE / "rbac" / f"{function}-clusterrole.yaml").read_text())
    assert set(doc) == {"rules"}, f"{function}-clusterrole.yaml: only a top-level rules: list"
    return doc["rules"]


def rbac_grants(function: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the function's file grants (tests/tests/rbac.rs compares
    the same with the calls the function makes)."""
    return {(g, r, v) for rule in rbac_rules(function) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_one_rbac_file_per_function_and_the_module_reads_them():
    files = sorted(p.name for p in (tf.MODULE / "rbac").iterdir())
    assert files == sorted(f"{f}-clusterrole.yaml" for f in rbac_functions()), "one <function>-clusterrole.yaml per function, nothing else"
    assert 'rbac/${f}-clusterrole.yaml' in tf.module_locals()["function_rules"]
    assert "for f in local.function_names" in tf.module_locals()["function_rules"]


@pytest.mark.parametrize("function", ["scheduler", "backup", "restore"])
def test_rbac_yaml_shape(function):
    assert function in rbac_functions()
    for rule in rbac_rules(function):
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        assert all(isinstance(v, list) and v for v in rule.values())
        assert all(isinstance(x, str) for v in rule.values() for x in v)
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        if "secrets" in rule["resources"]:
            # The module moves such a rule whole into per-namespace Roles when `namespaces`
            # is set: it must name nothing but Secrets, and only by name.
            assert rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}, rule


def test_rbac_is_split_as_the_threat_model_says():
    """docs/threat-model.md §1/§4: no function holds another's rights."""
    g = {f: rbac_grants(f) for f in rbac_functions()}
    stash = "stash.appscode.com"

    def holders(resource, verb, group=stash):
        return {f for f, grants in g.items() if (group, resource, verb) in grants}

    assert holders("secrets", "get", "") == {"backup", "restore"}
    assert not any(r == "secrets" and v != "get" for grants in g.values() for _, r, v in grants)
    assert holders("restoresessions/status", "patch") == {"restore", "scheduler"}, "backup must not be able to re-arm a restore"
    assert not holders("restoresessions", "create") | holders("restoresessions", "update") | holders("restoresessions", "delete")
    assert holders("backupsessions", "create") == {"scheduler"}
    assert holders("backupsessions", "delete") == {"backup"}
    assert holders("backupsessions/status", "patch") == {"backup", "scheduler"}
    assert holders("repositories/status", "patch") == {"backup"}
    scheduler_resources = {r for _, r, _ in g["scheduler"]}
    assert not scheduler_resources & {"secrets", "endpointslices", "repositories/status"}
    # AppBindings only to read their type (src/serve.rs) and blueprint annotation, Events
    # only to record an Invalid configuration or blueprint; Repositories only as a
    # blueprint gives them (never deleted, never their status).
    assert {(r, v) for _, r, v in g["scheduler"] if r in {"appbindings", "events", "repositories", "backupblueprints"}} == {
        ("appbindings", "get"),
        ("appbindings", "list"),
        ("events", "create"),
        ("repositories", "get"),
        ("repositories", "create"),
        ("repositories", "update"),
        ("backupblueprints", "get"),
    }
    assert holders("backupconfigurations", "delete") == {"scheduler"}, "only the blueprint step deletes configurations"
    assert not any(r.startswith("backupsessions") and v not in {"list", "get"} for _, r, v in g["restore"])


def test_restore_may_patch_only_the_named_unsealer_secrets_and_only_when_named():
    """A forced restore writes the snapshot's unseal keys into the target's unsealer Secret
    (src/keys.rs write: a JSON merge patch). That `patch` is not in the restore's file (every
    deployment gets what the file says): the module adds it for restore alone, by name
    (resourceNames = unsealer_secret_names), scoped like `get` on Secrets (per namespace when
    `namespaces` is set), and adds no rule at all when no name is given."""
    loc = tf.module_locals()
    defaults = {n: b.get("default") for n, b, _ in tf.module_blocks("variable")}
    assert defaults["unsealer_secret_names"] == []
    rules = re.sub(r"\s+", " ", loc["unsealer_secret_rules"])
    assert rules.startswith("${length(var.unsealer_secret_names) == 0 ? [] : [{"), rules
    for needle in ['apiGroups = [""]', 'resources = ["secrets"]', 'verbs = ["patch"]', "resourceNames = var.unsealer_secret_names"]:
        assert needle in rules, needle
    assert rules.count(" = ") == 4, f"the opt-in rule grants something else too: {rules}"
    function_rules = re.sub(r"\s+", " ", loc["function_rules"])
    assert 'f == "restore" ? local.unsealer_secret_rules : []' in function_rules, function_rules
    assert function_rules.count("unsealer_secret_rules") == 1
    # Both the ClusterRole and the per-namespace Roles carry a rule's names.
    for rtype in ("kubernetes_cluster_role_v1", "kubernetes_role_v1"):
        body = tf.resources(rtype)["function" if rtype == "kubernetes_cluster_role_v1" else "secrets"]
        (rule,) = body["dynamic"]
        (content,) = rule['"rule"']["content"]
        assert content["resource_names"] == "${try(rule.value.resourceNames, null)}", rtype
    # Its own resource is Secrets only, so the module's Secrets split moves it whole.
    assert "if contains(r.resources, \"secrets\")" in loc["namespaced_rules"]
    # The code writes with a merge patch, nothing else (no update, no create).
    keys_rs = (tf.FUNCTIONS / "stashless" / "src" / "keys.rs").read_text()
    assert "api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))" in keys_rs
    assert not re.search(r"Api<Secret>.*\n.*\.(create|replace|delete)\(", keys_rs)
    for f in rbac_functions():
        assert not any(r == "secrets" and v == "patch" for _, r, v in rbac_grants(f)), f"{f}-clusterrole.yaml grants patch on Secrets to every deployment"


def test_each_function_is_bound_to_its_own_group():
    loc = tf.module_locals()
    assert loc["kubernetes_groups"] == '${{for f in local.function_names : f => "${var.kubernetes_group}:${f}"}}'
    (entry,) = tf.resources("aws_eks_access_entry").values()
    assert entry["for_each"] == '${var.cluster_access == "access_entry" ? local.function_names : toset([])}'
    # The other mode's mapping carries the same role → group pairs (the apply test reads it).
    (out,) = [body for name, body, _ in tf.module_blocks("output") if name == "aws_auth_map_roles"]
    for needle in ["aws_iam_role.function[f].arn", "[local.kubernetes_groups[f]]", 'var.cluster_access == "aws_auth"']:
        assert needle in out["value"], needle
    assert entry["principal_arn"] == "${aws_iam_role.function[each.key].arn}"
    assert entry["kubernetes_groups"] == ["${local.kubernetes_groups[each.key]}"]
    roles = tf.resources("kubernetes_cluster_role_v1")
    bindings = tf.resources("kubernetes_cluster_role_binding_v1")
    assert set(roles) == set(bindings) == {"function", "bridge"}
    assert roles["function"]["for_each"] == bindings["function"]["for_each"] == "${local.function_names}"
    (rule,) = roles["function"]["dynamic"]
    assert rule['"rule"']["for_each"] == "${local.cluster_rules[each.key]}"
    (ref,) = bindings["function"]["role_ref"]
    assert ref["name"] == "${kubernetes_cluster_role_v1.function[each.key].metadata[0].name}"
    (subject,) = bindings["function"]["subject"]
    assert tf.unquote(subject["kind"]) == "Group" and subject["name"] == "${local.kubernetes_groups[each.key]}"
    # Secrets per namespace: one Role + RoleBinding per (function that has such a rule, namespace).
    role, binding = tf.resources("kubernetes_role_v1")["secrets"], tf.resources("kubernetes_role_binding_v1")["secrets"]
    assert role["for_each"] == binding["for_each"] == "${local.namespaced_grants}"
    (rule,) = role["dynamic"]
    assert rule['"rule"']["for_each"] == "${local.namespaced_rules[each.value.function]}"
    (subject,) = binding["subject"]
    assert subject["name"] == "${local.kubernetes_groups[each.value.function]}"
    (ref,) = binding["role_ref"]
    assert ref["name"] == "${kubernetes_role_v1.secrets[each.key].metadata[0].name}"
    # The split: Secrets rules leave the ClusterRole exactly when namespaces are listed.
    assert "length(var.namespaces) == 0 || !contains(r.resources, \"secrets\")" in loc["cluster_rules"]
    assert "if contains(r.resources, \"secrets\")" in loc["namespaced_rules"]
    assert "setproduct(" in loc["namespaced_grants"] and "var.namespaces" in loc["namespaced_grants"]
    # Nothing is bound to the bare prefix any more.
    text = (tf.MODULE / "kubernetes.tf").read_text()
    assert not re.search(r"name\s*=\s*var\.kubernetes_group\b", text)


def test_bridge_mirrors_the_reference_manifest():
    docs = list(yaml.safe_load_all((tf.INFRA / "manifests" / "bridge" / "bridge.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs if d}
    roles = tf.resources("kubernetes_cluster_role_v1")["bridge"]["rule"]
    ref_rules = by_kind["ClusterRole"]["rules"]
    assert len(roles) == len(ref_rules)
    for role, ref_rule in zip(roles, ref_rules):
        assert [tf.unquote(g) for g in role["api_groups"]] == ref_rule["apiGroups"]
        assert sorted(tf.unquote(r) for r in role["resources"]) == sorted(ref_rule["resources"])
        assert sorted(tf.unquote(v) for v in role["verbs"]) == sorted(ref_rule["verbs"])
    (container,) = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert {e["name"] for e in container["env"]} <= module_env()["bridge"]
    assert tf.granted_actions(rendered("bridge")) == {"events:PutEvents"}
    # Same requests and limits (CPU included: CKV_K8S_11).
    (deployment,) = tf.resources("kubernetes_deployment_v1").values()
    (resources,) = deployment["spec"][0]["template"][0]["spec"][0]["container"][0]["resources"]
    for kind in ("requests", "limits"):
        assert {k: tf.unquote(v) for k, v in resources[kind].items()} == container["resources"][kind], kind
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def hcl_peer(to: dict) -> dict:
    """One `to` block of kubernetes_network_policy_v1, as the API's NetworkPolicyPeer."""
    peer = {}
    for block, field in (("namespace_selector", "namespaceSelector"), ("pod_selector", "podSelector")):
        if block in to:
            (sel,) = to[block]
            peer[field] = {"matchLabels": {tf.unquote(k): tf.unquote(v) for k, v in sel["match_labels"].items() if not k.startswith("__")}}
    if "ip_block" in to:
        (ip,) = to["ip_block"]
        peer["ipBlock"] = {"cidr": tf.unquote(ip["cidr"])}
    assert peer, to
    return peer


def hcl_policy_rule(rule: dict, direction: str) -> dict:
    """One ingress/egress block, as the API's rule; a dynamic `to` over
    bridge_https_egress_cidrs is rendered with its default (empty: any address)."""
    out = {"ports": [{"protocol": tf.unquote(p["protocol"]), "port": int(tf.unquote(p["port"]))} for p in rule["ports"]]}
    peers = [hcl_peer(t) for t in rule.get(direction, [])]
    for dyn in rule.get("dynamic", []):
        ((label, body),) = [(k, v) for k, v in dyn.items() if not k.startswith("__")]
        assert tf.unquote(label) == direction and body["for_each"] == "${var.bridge_https_egress_cidrs}", dyn
        ((content,),) = [body["content"]]
        assert content["ip_block"][0]["cidr"] == f"${{{direction}.value}}"
    if peers:
        out[direction] = peers
    return out


def test_bridge_network_policy_mirrors_the_reference_manifest():
    """The module's NetworkPolicy, with its defaults (Pod Identity, HTTPS to any address), is
    bridge.yaml's; each selects its own Deployment's pods."""
    docs = {d["kind"]: d for d in yaml.safe_load_all((tf.INFRA / "manifests" / "bridge" / "bridge.yaml").read_text()) if d}
    ref = docs["NetworkPolicy"]["spec"]
    (policy,) = tf.resources("kubernetes_network_policy_v1").values()
    assert policy["count"] == "${var.enable_bridge ? 1 : 0}"
    (spec,) = policy["spec"]
    assert [tf.unquote(t) for t in spec["policy_types"]] == ref["policyTypes"]
    assert [hcl_policy_rule(r, "from") for r in spec["ingress"]] == ref["ingress"]
    egress = [hcl_policy_rule(r, "to") for r in spec["egress"]]
    # The Pod Identity agent's rule exists only with bridge_identity = pod_identity.
    ((label, body),) = [(k, v) for d in spec["dynamic"] for k, v in d.items() if not k.startswith("__")]
    assert tf.unquote(label) == "egress"
    assert body["for_each"] == '${var.bridge_identity == "pod_identity" ? [1] : []}'
    egress += [hcl_policy_rule(c, "to") for c in body["content"]]
    assert egress == ref["egress"]
    (selector,) = spec["pod_selector"]
    (deployment,) = tf.resources("kubernetes_deployment_v1").values()
    (dep_selector,) = deployment["spec"][0]["selector"]
    assert selector["match_labels"] == dep_selector["match_labels"]
    assert docs["NetworkPolicy"]["spec"]["podSelector"] == docs["Deployment"]["spec"]["selector"]
    (meta,) = policy["metadata"]
    assert meta["namespace"] == deployment["metadata"][0]["namespace"]


def test_crds_are_the_generated_ones():
    files = sorted(p.name.removesuffix(".yaml") for p in (tf.INFRA / "crds" / "generated").glob("*.yaml"))
    listed = sorted(tf.unquote(x) for x in tf.module_locals()["crd_files"])
    assert listed == files
    for f in files:
        doc = yaml.safe_load((tf.INFRA / "crds" / "generated" / f"{f}.yaml").read_text())
        assert doc["kind"] == "CustomResourceDefinition" and doc["metadata"]["name"] == f
