data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition = data.aws_partition.current.partition
  # `id` is the region's name in provider 5 and 6 (6 deprecates `name` for `region`,
  # which 5 lacks).
  region     = data.aws_region.current.id
  account_id = data.aws_caller_identity.current.account_id

  cluster_arn = "arn:${local.partition}:eks:${local.region}:${local.account_id}:cluster/${var.cluster_name}"

  # The Lambda functions: one per crate under functions/ that runs on lambda_runtime.
  # (functions/bridge is an in-cluster Deployment, see kubernetes.tf.)
  function_names = toset(["scheduler", "backup", "restore"])

  lambda_zip_dir = coalesce(var.lambda_zip_dir, "${path.module}/../../../target/lambda")

  # Environment of each function: exactly what the Rust code reads in production (the
  # local/test-only variables such as STASHLESS_KUBE_URL are never set here; the
  # consistency test in tests/infra checks both directions).
  common_environment = {
    STASHLESS_EKS_CLUSTER = var.cluster_name
    STASHLESS_NAMESPACES  = join(",", var.namespaces)
  }
  pushgateway_environment = var.pushgateway_url == "" ? {} : {
    STASHLESS_PUSHGATEWAY_URL = var.pushgateway_url
  }
  # Backup seals the unseal keys it escrows with this key, restore opens them (and seals
  # those of its undo snapshot); restore stamps keepUntil on the undo, backup's retention
  # removes it after that (escrow.tf).
  escrow_environment = {
    STASHLESS_ESCROW_KMS_KEY_ID      = local.escrow_kms_key_arn
    STASHLESS_PRE_RESTORE_KEEP_HOURS = tostring(var.pre_restore_keep_hours)
  }

  functions = {
    scheduler = {
      description          = "stashless scheduler: each tick creates the due BackupSessions and sweeps lost or stale ones"
      memory_size          = var.scheduler_memory_size
      timeout              = var.scheduler_timeout
      reserved_concurrency = var.scheduler_reserved_concurrency
      environment = merge(local.common_environment, {
        STASHLESS_EVENT_BUS                 = aws_cloudwatch_event_bus.this.name
        STASHLESS_STARTING_DEADLINE_SECONDS = tostring(var.starting_deadline_seconds)
      })
    }
    backup = {
      description          = "stashless backup: streams a Vault/OpenBao raft snapshot into S3, verified in flight"
      memory_size          = var.backup_memory_size
      timeout              = var.backup_timeout
      reserved_concurrency = var.backup_reserved_concurrency
      environment = merge(local.common_environment, local.pushgateway_environment, local.escrow_environment, {
        STASHLESS_PART_SIZE_MIB   = tostring(var.part_size_mib)
        STASHLESS_PARTS_IN_FLIGHT = tostring(var.parts_in_flight)
      })
    }
    restore = {
      description          = "stashless restore: snapshots the target (the undo), then streams a verified snapshot from S3 into Vault/OpenBao"
      memory_size          = var.restore_memory_size
      timeout              = var.restore_timeout
      reserved_concurrency = var.restore_reserved_concurrency
      environment          = merge(local.common_environment, local.pushgateway_environment, local.escrow_environment)
    }
  }

  tags = merge(var.tags, {
    "app.kubernetes.io/part-of" = "stashless"
  })
}

################################################################################
# Lambda functions
################################################################################

resource "aws_lambda_function" "this" {
  for_each = local.functions

  #checkov:skip=CKV_AWS_116:Failed asynchronous invocations go to an SQS queue through aws_lambda_function_event_invoke_config's on-failure destination, which records the request, response and error; a legacy dead_letter_config on top would deliver each failure twice.
  #checkov:skip=CKV_AWS_173:The environment holds no secret (cluster and bus names, namespaces, upload tuning, the escrow key's ARN; tests/infra checks the exact list) and Lambda encrypts it at rest with its service key; a customer key would add a KMS call to every cold start for no gain.
  #checkov:skip=CKV_AWS_272:Code signing is opt-in through var.code_signing_config_arn: it needs an AWS Signer profile the caller owns, and cargo-lambda's zips are unsigned.

  function_name = "${var.name}-${each.key}"
  description   = each.value.description
  role          = aws_iam_role.function[each.key].arn

  filename         = "${local.lambda_zip_dir}/${each.key}/bootstrap.zip"
  source_code_hash = filebase64sha256("${local.lambda_zip_dir}/${each.key}/bootstrap.zip")
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]

  memory_size                    = each.value.memory_size
  timeout                        = each.value.timeout
  reserved_concurrent_executions = each.value.reserved_concurrency
  code_signing_config_arn        = var.code_signing_config_arn

  environment {
    variables = each.value.environment
  }

  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = var.security_group_ids
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.function[each.key].name
  }

  tracing_config {
    mode = var.tracing_mode
  }

  tags = local.tags

  depends_on = [
    aws_cloudwatch_log_group.function,
    aws_iam_role_policy.function,
  ]
}

resource "aws_cloudwatch_log_group" "function" {
  for_each = local.function_names

  #checkov:skip=CKV_AWS_338:These are operational logs of short-lived functions; retention is var.cloudwatch_logs_retention_in_days (default 30). The durable record of each backup is the BackupSession status and the manifest stored next to the snapshot.

  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.cloudwatch_logs_retention_in_days
  kms_key_id        = local.kms_key_arn

  tags = local.tags
}

################################################################################
# Asynchronous invocation: retries and dead-letter queues
################################################################################

# One queue per function for invocations that failed after Lambda's retries, one for ticks
# EventBridge Scheduler could not deliver, one for bus events the rules could not deliver.
# Messages carry only object references (namespace/name), never object bodies or secrets.
locals {
  dlq_names = toset(concat(tolist(local.function_names), ["schedule", "events"]))
}

resource "aws_sqs_queue" "dlq" {
  for_each = local.dlq_names

  name                      = "${var.name}-${each.key}-dlq"
  message_retention_seconds = var.dlq_message_retention_seconds
  sqs_managed_sse_enabled   = true

  tags = local.tags
}

# Only the services and roles that deliver failures may send to the queues.
resource "aws_sqs_queue_policy" "dlq" {
  for_each = local.dlq_names

  queue_url = aws_sqs_queue.dlq[each.key].id
  policy    = data.aws_iam_policy_document.dlq[each.key].json
}

data "aws_iam_policy_document" "dlq" {
  for_each = local.dlq_names

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.dlq[each.key].arn]

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

  dynamic "statement" {
    # EventBridge rules deliver undeliverable bus events with the service principal.
    for_each = each.key == "events" ? [1] : []
    content {
      sid       = "EventBridgeRules"
      actions   = ["sqs:SendMessage"]
      resources = [aws_sqs_queue.dlq[each.key].arn]

      principals {
        type        = "Service"
        identifiers = ["events.amazonaws.com"]
      }

      condition {
        test     = "ArnEquals"
        variable = "aws:SourceArn"
        values   = [for r in aws_cloudwatch_event_rule.route : r.arn]
      }
    }
  }
}

resource "aws_lambda_function_event_invoke_config" "this" {
  for_each = local.function_names

  function_name                = aws_lambda_function.this[each.key].function_name
  maximum_retry_attempts       = var.maximum_retry_attempts
  maximum_event_age_in_seconds = var.maximum_event_age_in_seconds

  destination_config {
    on_failure {
      destination = aws_sqs_queue.dlq[each.key].arn
    }
  }
}
