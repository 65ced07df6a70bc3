################################################################################
# Alarms → SNS
################################################################################

locals {
  # What the backup function emits as CloudWatch embedded-metric-format lines
  # (functions/stashless/src/metrics.rs emf_line, backup.rs push_metrics): namespace
  # "stashless", metric BackupSuccess (1 on success, 0 on failure), one dimension
  # BackupConfiguration = "<namespace>/<name>". tests/infra checks these against the code.
  emf_namespace      = "stashless"
  emf_backup_metric  = "BackupSuccess"
  emf_backup_dim_key = "BackupConfiguration"

  alarm_actions = [aws_sns_topic.alarms.arn]
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = local.kms_key_arn

  tags = local.tags
}

resource "aws_sns_topic_subscription" "email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# Any invocation that returned an error (a rejected event is a normal response, not an
# error: this counts failures a retry could fix and crashes).
resource "aws_cloudwatch_metric_alarm" "errors" {
  for_each = local.function_names

  alarm_name          = "${var.name}-${each.key}-errors"
  alarm_description   = "The stashless ${each.key} function returned errors. Its log group is /aws/lambda/${var.name}-${each.key}."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.this[each.key].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = local.tags
}

# Something ended up in a dead-letter queue: an invocation failed after all retries, or a
# tick or bus event could not be delivered.
resource "aws_cloudwatch_metric_alarm" "dlq" {
  for_each = local.dlq_names

  alarm_name          = "${var.name}-${each.key}-dlq"
  alarm_description   = "Messages in the stashless ${each.key} dead-letter queue (${aws_sqs_queue.dlq[each.key].name}): inspect them, fix the cause, redrive or delete them."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq[each.key].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = local.tags
}

# No successful backup of a BackupConfiguration within max_age_hours: every hourly sum of
# BackupSuccess in the window is below 1 (no data counts as no success).
resource "aws_cloudwatch_metric_alarm" "backup_age" {
  for_each = { for c in var.backup_configurations : "${c.namespace}/${c.name}" => c }

  alarm_name          = "${var.name}-backup-age-${each.value.namespace}-${each.value.name}"
  alarm_description   = "No successful backup of BackupConfiguration ${each.key} in ${each.value.max_age_hours} h. Check its BackupSessions: kubectl get backupsessions -n ${each.value.namespace}."
  namespace           = local.emf_namespace
  metric_name         = local.emf_backup_metric
  dimensions          = { (local.emf_backup_dim_key) = each.key }
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = each.value.max_age_hours
  datapoints_to_alarm = each.value.max_age_hours
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = local.tags
}
