"""The Rust scanning the consistency tests rely on, on snippets with known answers."""

import json

import pytest

import test_consistency as c
import tf

SNIPPET = r'''
use aws_sdk_s3::Client;
// self.s3.delete_bucket().send() in a comment is not a call
const DOC: &str = "self.s3.put_bucket_policy().send()";
async fn f(s3: &Client, http: &reqwest::Client) {
    let out = self
        .s3
        .create_multipart_upload()
        .bucket(b)
        .key(&format!("{}/{}", a, b))
        .send()
        .await?;
    match s3.get_object().bucket(b).key(k).send().await { Ok(_) => {}, Err(_) => {} }
    let pages = s3.list_objects_v2().bucket(b).into_paginator().send();
    let r = http.get(url).bearer_auth(t).send().await?;
    let req = sts.get_caller_identity().presigned(cfg).await?;
    let key = aws.kms(None, Some(e)).generate_data_key().key_id(k).send().await?;
    let v = std::env::var("STASHLESS_REAL");
}
#[cfg(test)]
mod tests {
    fn t() { let _ = s3.create_bucket().send(); let _ = std::env::var("STASHLESS_TEST_ONLY"); }
}
'''


def scan(src):
    masked = tf.mask_rust(src)
    ranges = tf.test_block_ranges(masked)
    raw, masked = tf.without_ranges(src, ranges), tf.without_ranges(masked, ranges)
    return raw, masked


def test_sdk_calls_are_found_and_nothing_else():
    raw, masked = scan(SNIPPET)
    ops = [op for _, op in tf.sdk_calls(masked)]
    assert ops == ["create_multipart_upload", "get_object", "list_objects_v2", "get_caller_identity", "generate_data_key"]


def test_env_names_come_from_production_string_literals():
    raw, masked = scan(SNIPPET)
    names = {n for _, s in tf.string_literals(raw, masked) for n in c.ENV_NAME.findall(s)}
    assert names == {"STASHLESS_REAL"}


def test_every_mapped_operation_has_a_known_service():
    for op, actions in c.SDK_ACTIONS.items():
        assert all(a.split(":")[0] in {"s3", "events", "eks", "kms", "ssm"} for a in actions), op


def test_pending_eks_permission_is_accepted_without_a_call_site(monkeypatch):
    """Before the EKS module existed, eks:DescribeCluster was granted by design only."""
    real = c.sdk_operations()
    monkeypatch.setattr(c, "sdk_operations", lambda: {k: v for k, v in real.items() if k != "describe_cluster"})
    assert "eks:DescribeCluster" not in c.actions_called()
    with pytest.warns(UserWarning, match="eks:DescribeCluster granted by design"):
        c.test_nothing_is_granted_that_no_code_calls()
    c.test_every_call_the_code_makes_is_granted()


def test_template_renderer_handles_the_kms_conditional():
    with_kms = tf.policy("backup")
    without = tf.policy("backup", kms_key_arn="", unsealer_kms_key_arns="")
    assert {"kms:GenerateDataKey", "kms:Decrypt"} <= tf.granted_actions(with_kms)
    # What is left is the escrow key's, which every rendering has.
    escrow = tf.SAMPLE_VARS["escrow_kms_key_arn"]
    assert {st["Resource"] for st in tf.statements(without) if any(a.startswith("kms:") for a in tf.as_list(st["Action"]))} == {escrow}


def test_template_renderer_inserts_json_lists_raw():
    """iam.tf passes lists as JSON arrays: inserted as they are, a Resource array."""
    doc = tf.policy("restore")
    (ssm,) = [st for st in tf.statements(doc) if "ssm:PutParameter" in tf.as_list(st["Action"])]
    assert ssm["Resource"] == json.loads(tf.SAMPLE_VARS["unsealer_ssm_parameter_arns"])
    assert not [st for st in tf.statements(tf.policy("restore", unsealer_ssm_parameter_arns="")) if "ssm:PutParameter" in tf.as_list(st["Action"])]
