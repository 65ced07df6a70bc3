################################################################################
# KMS key for the unseal-key escrows (unless the caller brings one)
#
# Backup seals each cluster's unseal keys under a data key from this key (GenerateDataKey,
# encryption context stashless:purpose = unseal-keys, stashless:snapshot, stashless:sha256)
# and stores the escrow beside the snapshot (<prefix>/snapshots/<ns>/<session>.escrow);
# only restore may Decrypt. Its own key, not the logs key nor the bucket key: who may open
# an escrow is decided here alone (iam.tf and the policy templates grant it).
################################################################################

locals {
  create_escrow_kms_key = var.escrow_kms_key_arn == null
  escrow_kms_key_arn    = local.create_escrow_kms_key ? aws_kms_key.escrow[0].arn : var.escrow_kms_key_arn
}

resource "aws_kms_key" "escrow" {
  count = local.create_escrow_kms_key ? 1 : 0

  description             = "stashless unseal-key escrows (backup seals, restore opens)"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = data.aws_iam_policy_document.escrow_key[0].json

  tags = local.tags
}

resource "aws_kms_alias" "escrow" {
  count = local.create_escrow_kms_key ? 1 : 0

  name          = "alias/${var.name}-escrow"
  target_key_id = aws_kms_key.escrow[0].key_id
}

# Administration stays with the account; no service may use the key. The functions' roles
# get GenerateDataKey (backup, restore's undo snapshot) and Decrypt (restore) through their
# own policies, scoped to this key and to the escrow encryption context.
data "aws_iam_policy_document" "escrow_key" {
  count = local.create_escrow_kms_key ? 1 : 0

  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; the account root statement is AWS's default key policy, without which the key becomes unmanageable.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" means this key only; the account root statement is AWS's default key policy, without which the key becomes unmanageable.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" means this key only; the account root statement is AWS's default key policy, without which the key becomes unmanageable.

  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}
