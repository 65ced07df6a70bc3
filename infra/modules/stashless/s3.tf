################################################################################
# The backup bucket (optional) and its KMS key
#
# Objects: <prefix>/snapshots/<namespace>/<session>.snap and .json (the manifest). The
# functions write snapshots with S3 multipart uploads and send no encryption header: the
# bucket's default encryption (SSE-KMS with the bucket's own key, S3 Bucket Keys on) applies.
################################################################################

locals {
  # (An empty name with create_bucket = false fails the precondition in iam.tf.)
  bucket_name = var.create_bucket ? coalesce(var.bucket_name, "${var.name}-${local.account_id}-${local.region}") : (var.bucket_name == null ? "" : var.bucket_name)
  bucket_arn  = "arn:${local.partition}:s3:::${local.bucket_name}"

  # The key the functions need for the bucket's objects: the module's own key, or the one
  # the caller names for an existing bucket (null: SSE-S3, no KMS permission needed).
  bucket_kms_key_arn = var.create_bucket ? aws_kms_key.bucket[0].arn : var.bucket_kms_key_arn
}

resource "aws_kms_key" "bucket" {
  count = var.create_bucket ? 1 : 0

  description             = "stashless backup bucket ${local.bucket_name}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = data.aws_iam_policy_document.bucket_key[0].json

  tags = local.tags
}

resource "aws_kms_alias" "bucket" {
  count = var.create_bucket ? 1 : 0

  name          = "alias/${var.name}-backups"
  target_key_id = aws_kms_key.bucket[0].key_id
}

# Administration stays with the account (IAM policies decide who may use the key); the
# functions' roles get GenerateDataKey/Decrypt through their own policies, scoped to this key.
data "aws_iam_policy_document" "bucket_key" {
  count = var.create_bucket ? 1 : 0

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

resource "aws_s3_bucket" "this" {
  count = var.create_bucket ? 1 : 0

  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery choice that needs a destination bucket and key in another region the caller owns; add aws_s3_bucket_replication_configuration next to this module when wanted (versioning, which it requires, is on).
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events: snapshots are tracked by their manifests and by the BackupSession and Repository status.

  bucket        = local.bucket_name
  force_destroy = var.force_destroy
  # Object Lock is switched on by aws_s3_bucket_object_lock_configuration below, not by
  # object_lock_enabled here: that argument forces a new bucket, so turning the lock on
  # for a live deployment would plan to replace the bucket holding every snapshot.

  tags = local.tags
}

resource "aws_s3_bucket_versioning" "this" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.this[0].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.this[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.bucket[0].arn
    }
    # One data key per bucket instead of a KMS call per object and part.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  count = var.create_bucket ? 1 : 0

  bucket                  = aws_s3_bucket.this[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.this[0].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.this[0].id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    # A function that died mid-upload (timeout, crash) leaves its parts behind.
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    # Retention deletes a snapshot by adding a delete marker; the old version stays
    # recoverable for this many days, then goes for good.
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_object_lock_configuration" "this" {
  count = var.create_bucket && var.object_lock_mode != null ? 1 : 0

  bucket = aws_s3_bucket.this[0].id
  # Enables Object Lock on the (versioned) bucket, new or existing.
  object_lock_enabled = "Enabled"

  rule {
    default_retention {
      mode = var.object_lock_mode
      days = var.object_lock_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_logging" "this" {
  count = var.create_bucket && var.access_log_bucket != null ? 1 : 0

  bucket        = aws_s3_bucket.this[0].id
  target_bucket = var.access_log_bucket
  target_prefix = coalesce(var.access_log_prefix, "s3-access/${local.bucket_name}/")
}

resource "aws_s3_bucket_policy" "this" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.this[0].id
  policy = data.aws_iam_policy_document.bucket[0].json

  depends_on = [aws_s3_bucket_public_access_block.this]
}

data "aws_iam_policy_document" "bucket" {
  count = var.create_bucket ? 1 : 0

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  # Deny an upload that asks for another encryption than SSE-KMS — but only when it carries
  # the header at all (Null = false). Multipart uploads are authorised as s3:PutObject for
  # every request, and only CreateMultipartUpload can carry the header: UploadPart and
  # CompleteMultipartUpload never do, so the usual "deny when the header is not aws:kms"
  # (StringNotEquals alone, which also matches a missing header) would refuse every part.
  # Requests without the header get the bucket's default encryption (aws:kms, this key).
  statement {
    sid       = "DenyOtherEncryption"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringNotEquals"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["aws:kms"]
    }

    condition {
      test     = "Null"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["false"]
    }
  }

  # Same pattern for the key: a request that names a KMS key must name the bucket's.
  statement {
    sid       = "DenyOtherKey"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringNotEquals"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = [aws_kms_key.bucket[0].arn]
    }

    condition {
      test     = "Null"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = ["false"]
    }
  }
}
