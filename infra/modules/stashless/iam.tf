################################################################################
# One IAM role per function, least privilege
#
# The policies are JSON templates under policies/ so that tests/infra can render them and
# compare them with the AWS SDK calls the Rust code makes. Vault's AWS auth method (login
# with the function's own role) signs sts:GetCallerIdentity, which needs no IAM permission:
# nothing is granted for it.
################################################################################

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each = local.function_names

  name               = "${var.name}-${each.key}"
  description        = "stashless ${each.key} function"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json

  tags = local.tags
}

locals {
  # Everything the policy templates may refer to; each template uses what it needs. Lists
  # go in as JSON arrays, or "" when empty: a template grants nothing on an empty one.
  policy_template_vars = {
    for f in local.function_names : f => {
      bucket_arn                  = local.bucket_arn
      prefix                      = var.s3_key_prefix
      kms_key_arn                 = local.bucket_kms_key_arn == null ? "" : local.bucket_kms_key_arn
      escrow_kms_key_arn          = local.escrow_kms_key_arn
      unsealer_ssm_parameter_arns = length(var.unsealer_ssm_parameter_arns) == 0 ? "" : jsonencode(var.unsealer_ssm_parameter_arns)
      unsealer_kms_key_arns       = length(var.unsealer_kms_key_arns) == 0 ? "" : jsonencode(var.unsealer_kms_key_arns)
      cluster_arn                 = local.cluster_arn
      bus_arn                     = aws_cloudwatch_event_bus.this.arn
      dlq_arn                     = aws_sqs_queue.dlq[f].arn
      log_group_arn               = aws_cloudwatch_log_group.function[f].arn
    }
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = local.function_names

  name = "${var.name}-${each.key}"
  role = aws_iam_role.function[each.key].id
  # jsondecode/jsonencode: fail at plan time on a malformed template, and store it minified.
  policy = jsonencode(jsondecode(templatefile("${path.module}/policies/${each.key}.json.tftpl", local.policy_template_vars[each.key])))

  lifecycle {
    precondition {
      condition     = var.create_bucket || var.bucket_name != null
      error_message = "With create_bucket = false, bucket_name must name the existing backup bucket."
    }
  }
}

resource "aws_iam_role_policy_attachment" "xray" {
  for_each = var.tracing_mode == "Active" ? local.function_names : toset([])

  role       = aws_iam_role.function[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

################################################################################
# The bridge's role: events:PutEvents on the bus, nothing else
################################################################################

data "aws_iam_policy_document" "bridge_assume" {
  count = var.enable_bridge ? 1 : 0

  dynamic "statement" {
    for_each = var.bridge_identity == "pod_identity" ? [1] : []
    content {
      actions = ["sts:AssumeRole", "sts:TagSession"]

      principals {
        type        = "Service"
        identifiers = ["pods.eks.amazonaws.com"]
      }

      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
    }
  }

  dynamic "statement" {
    for_each = var.bridge_identity == "irsa" ? [1] : []
    content {
      actions = ["sts:AssumeRoleWithWebIdentity"]

      principals {
        type        = "Federated"
        identifiers = [var.oidc_provider_arn]
      }

      condition {
        test     = "StringEquals"
        variable = "${local.oidc_issuer}:sub"
        values   = ["system:serviceaccount:${var.bridge_namespace}:${local.bridge_name}"]
      }

      condition {
        test     = "StringEquals"
        variable = "${local.oidc_issuer}:aud"
        values   = ["sts.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "bridge" {
  count = var.enable_bridge ? 1 : 0

  name               = "${var.name}-bridge"
  description        = "stashless in-cluster watch bridge (${var.bridge_identity})"
  assume_role_policy = data.aws_iam_policy_document.bridge_assume[0].json

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.bridge_identity != "irsa" || var.oidc_provider_arn != null
      error_message = "bridge_identity = \"irsa\" needs oidc_provider_arn."
    }
  }
}

resource "aws_iam_role_policy" "bridge" {
  count = var.enable_bridge ? 1 : 0

  name = "${var.name}-bridge"
  role = aws_iam_role.bridge[0].id
  policy = jsonencode(jsondecode(templatefile("${path.module}/policies/bridge.json.tftpl", {
    bus_arn = aws_cloudwatch_event_bus.this.arn
  })))
}
