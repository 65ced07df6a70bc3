"""Defects found by reading the module against the providers' schemas and AWS's limits
(issue 17), each held by a test that fails without its fix. Where Terraform itself can
decide (how an expression renders, whether a variable is accepted), the image's Terraform
binary decides: no providers are needed for either."""

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

import tf

PLACEHOLDER = "<aws.scheduler.scheduled-time>"


def terraform():
    path = shutil.which("terraform") or shutil.which("tofu")
    if not path:
        pytest.fail("no terraform (or tofu) on PATH: the image's Terraform 1.11 is expected")
    return path


def run_terraform(args, cwd, stdin=None):
    env = dict(os.environ, TF_CLI_CONFIG_FILE="/dev/null", TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    return subprocess.run([terraform(), *args], cwd=cwd, input=stdin, capture_output=True, text=True, env=env, timeout=120)


def console(expression: str) -> str:
    """Evaluate an expression with Terraform; returns the string value it renders."""
    with tempfile.TemporaryDirectory() as d:
        out = run_terraform(["console"], d, stdin=expression + "\n")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip())


def tick_target() -> dict:
    (schedule,) = tf.resources("aws_scheduler_schedule").values()
    (target,) = schedule["target"]
    return target


def test_the_schedule_input_reaches_eventbridge_scheduler_with_its_placeholder_literal():
    text = (tf.MODULE / "eventbridge.tf").read_text()
    (expression,) = re.findall(r"^\s*input\s*=\s*(.+)$", text, flags=re.M)
    rendered = console(expression)
    # jsonencode() writes < and > as \u003c and \u003e: Scheduler would not substitute.
    assert PLACEHOLDER in rendered, rendered
    assert "\\u003c" not in rendered
    # With the time substituted it is exactly the event the scheduler function is fed in the
    # runtime conformance test (every events/ sample, through the real Runtime API loop).
    sample = json.loads((tf.ROOT / "events" / "scheduler" / "tick-raw-with-time.json").read_text())
    assert json.loads(rendered.replace(PLACEHOLDER, sample["time"])) == sample


def test_object_lock_is_switched_on_without_replacing_the_bucket():
    (bucket,) = tf.resources("aws_s3_bucket").values()
    # object_lock_enabled on the bucket forces a new bucket when it changes.
    assert "object_lock_enabled" not in bucket
    (lock,) = tf.resources("aws_s3_bucket_object_lock_configuration").values()
    assert tf.unquote(lock["object_lock_enabled"]) == "Enabled"
    assert "var.object_lock_mode != null" in lock["count"]
    assert lock["depends_on"] == ["${aws_s3_bucket_versioning.this}"]


@pytest.mark.parametrize("rtype", ["aws_scheduler_schedule", "aws_cloudwatch_event_target"])
def test_no_invocation_before_the_functions_may_read_the_cluster(rtype):
    for name, body in tf.resources(rtype).items():
        deps = set(body.get("depends_on", []))
        assert {
            "${aws_eks_access_entry.function}",
            "${kubernetes_cluster_role_binding_v1.function}",
            "${kubernetes_role_binding_v1.secrets}",
        } <= deps, f"{rtype}.{name}: {deps}"


def test_no_attribute_provider_6_deprecates():
    for path in tf.tf_files():
        assert "aws_region.current.name" not in path.read_text(), path


REQUIRED = ["-var", "cluster_name=prod", "-var", 'subnet_ids=["subnet-1"]', "-var", 'security_group_ids=["sg-1"]']


@pytest.fixture(scope="module")
def variables_only():
    """The module's variables.tf alone, initialised: `terraform plan` then checks every
    variable's validation and plans nothing, with no provider and no cloud."""
    d = tempfile.mkdtemp()
    shutil.copy(tf.MODULE / "variables.tf", d)
    out = run_terraform(["init", "-backend=false", "-input=false"], d)
    assert out.returncode == 0, out.stderr
    yield d
    shutil.rmtree(d, ignore_errors=True)


def plan(d, *extra):
    return run_terraform(["plan", "-input=false", "-lock=false", *REQUIRED, *extra], d)


def test_the_defaults_are_accepted(variables_only):
    out = plan(variables_only)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    "assignment, says",
    [
        ('namespaces=["vault","vault"]', "namespaces must be distinct"),
        ('namespaces=["Vault"]', "namespaces must be distinct Kubernetes namespace names"),
        ("kms_deletion_window_in_days=5", "kms_deletion_window_in_days must be a whole number from 7 to 30"),
        ("kms_deletion_window_in_days=31", "from 7 to 30"),
        ("cloudwatch_logs_retention_in_days=2", "cloudwatch_logs_retention_in_days must be 0 or one of"),
        ("schedule_maximum_retry_attempts=186", "schedule_maximum_retry_attempts must be a whole number from 0 to 185"),
        ("event_retry_attempts=-1", "event_retry_attempts must be a whole number from 0 to 185"),
        ("schedule_maximum_event_age_in_seconds=59", "from 60 to 86400"),
        ("event_maximum_age_in_seconds=86401", "event_maximum_age_in_seconds must be from 60 to 86400"),
        ("scheduler_reserved_concurrency=0", "scheduler_reserved_concurrency must be null or at least 1"),
        ("restore_reserved_concurrency=0", "restore_reserved_concurrency must be null or at least 1"),
    ],
)
def test_values_aws_refuses_are_refused_at_plan(variables_only, assignment, says):
    out = plan(variables_only, "-var", assignment)
    assert out.returncode != 0, f"{assignment} was accepted"
    assert says in " ".join(out.stderr.split()), out.stderr


@pytest.mark.parametrize(
    "assignment",
    [
        'namespaces=["vault","team-b"]',
        "kms_deletion_window_in_days=7",
        "cloudwatch_logs_retention_in_days=0",
        "cloudwatch_logs_retention_in_days=3653",
        "schedule_maximum_retry_attempts=185",
        "event_maximum_age_in_seconds=86400",
        "restore_reserved_concurrency=1",
    ],
)
def test_values_aws_accepts_are_accepted_at_plan(variables_only, assignment):
    out = plan(variables_only, "-var", assignment)
    assert out.returncode == 0, out.stderr
