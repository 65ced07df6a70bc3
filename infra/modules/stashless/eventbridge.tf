################################################################################
# The schedule tick: EventBridge Scheduler → scheduler function, every minute
################################################################################

resource "aws_scheduler_schedule" "tick" {
  #checkov:skip=CKV_AWS_297:The schedule's only payload is the constant {"time": "<aws.scheduler.scheduled-time>"}, no data worth a customer managed key; EventBridge Scheduler encrypts it with an AWS owned key.

  name        = "${var.name}-tick"
  group_name  = "default"
  description = "stashless: one tick a minute; the scheduler function works out which cron slots came due"

  # The scheduler computes every slot due since the last tick (5-field cron with time
  # zones), so a one-minute tick serves any BackupConfiguration schedule.
  schedule_expression          = "rate(1 minute)"
  schedule_expression_timezone = "UTC"
  state                        = var.schedule_enabled ? "ENABLED" : "DISABLED"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.this["scheduler"].arn
    role_arn = aws_iam_role.schedule.arn
    # The scheduled time, not the delivery time: a retried tick computes the same slots
    # and creates the same (deterministically named) BackupSessions, i.e. nothing new.
    # A literal, not jsonencode(): jsonencode escapes < and > (\u003c), and EventBridge
    # Scheduler then never sees the placeholder it substitutes.
    input = "{\"time\":\"<aws.scheduler.scheduled-time>\"}"

    retry_policy {
      maximum_retry_attempts       = var.schedule_maximum_retry_attempts
      maximum_event_age_in_seconds = var.schedule_maximum_event_age_in_seconds
    }

    dead_letter_config {
      arn = aws_sqs_queue.dlq["schedule"].arn
    }
  }

  # No tick before the functions may read the cluster (401/403, DLQ, alarms), and none
  # after their access is gone on destroy.
  depends_on = [
    aws_eks_access_entry.function,
    kubernetes_cluster_role_binding_v1.function,
    kubernetes_role_binding_v1.secrets,
  ]
}

data "aws_iam_policy_document" "schedule_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "schedule" {
  name               = "${var.name}-schedule"
  description        = "EventBridge Scheduler: invoke the stashless scheduler function"
  assume_role_policy = data.aws_iam_policy_document.schedule_assume.json

  tags = local.tags
}

data "aws_iam_policy_document" "schedule" {
  statement {
    sid       = "InvokeScheduler"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.this["scheduler"].arn]
  }

  # EventBridge Scheduler sends undeliverable ticks to the DLQ with this role.
  statement {
    sid       = "DeadLetterQueue"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dlq["schedule"].arn]
  }
}

resource "aws_iam_role_policy" "schedule" {
  name   = "${var.name}-schedule"
  role   = aws_iam_role.schedule.id
  policy = data.aws_iam_policy_document.schedule.json
}

################################################################################
# The bus for session events, and the rules routing them to the functions
#
# Events (functions/stashless/src/dispatch.rs): source "stashless.bridge", detail-type
# "<Kind> <Change>", detail {kind, namespace, name, uid, resourceVersion, change}. The
# bridge sends Added/Modified; the scheduler sends Added for the sessions it creates and
# Sweep for Pending sessions it finds again.
################################################################################

locals {
  event_bus_name = coalesce(var.event_bus_name, var.name)
  event_source   = "stashless.bridge"

  routes = {
    backup = {
      kind    = "BackupSession"
      changes = ["Added", "Modified", "Sweep"]
    }
    restore = {
      kind    = "RestoreSession"
      changes = ["Added", "Modified", "Sweep"]
    }
    scheduler = {
      kind    = "BackupConfiguration"
      changes = ["Added", "Modified"]
    }
  }
}

resource "aws_cloudwatch_event_bus" "this" {
  name = local.event_bus_name

  tags = local.tags
}

resource "aws_cloudwatch_event_rule" "route" {
  for_each = local.routes

  name           = "${var.name}-${each.key}"
  description    = "stashless: ${each.value.kind} changes → ${each.key} function"
  event_bus_name = aws_cloudwatch_event_bus.this.name

  event_pattern = jsonencode({
    source        = [local.event_source]
    "detail-type" = [for c in each.value.changes : "${each.value.kind} ${c}"]
    detail = {
      kind = [each.value.kind]
    }
  })

  tags = local.tags
}

resource "aws_cloudwatch_event_target" "route" {
  for_each = local.routes

  rule           = aws_cloudwatch_event_rule.route[each.key].name
  event_bus_name = aws_cloudwatch_event_bus.this.name
  target_id      = each.key
  arn            = aws_lambda_function.this[each.key].arn

  retry_policy {
    maximum_retry_attempts       = var.event_retry_attempts
    maximum_event_age_in_seconds = var.event_maximum_age_in_seconds
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq["events"].arn
  }

  # As the schedule: no event reaches a function before it may read the cluster.
  depends_on = [
    aws_eks_access_entry.function,
    kubernetes_cluster_role_binding_v1.function,
    kubernetes_role_binding_v1.secrets,
  ]
}

resource "aws_lambda_permission" "events" {
  for_each = local.routes

  statement_id  = "AllowEventBridgeRule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this[each.key].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.route[each.key].arn
}
