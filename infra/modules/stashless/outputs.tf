output "function_arns" {
  description = "ARNs of the Lambda functions, by function (scheduler, backup, restore)."
  value       = { for k, f in aws_lambda_function.this : k => f.arn }
}

output "function_names" {
  description = "Names of the Lambda functions, by function."
  value       = { for k, f in aws_lambda_function.this : k => f.function_name }
}

output "function_role_arns" {
  description = "ARNs of the functions' IAM roles (mapped to the Kubernetes group by EKS access entries or aws-auth), by function."
  value       = { for k, r in aws_iam_role.function : k => r.arn }
}

output "log_group_names" {
  description = "CloudWatch log groups of the functions, by function."
  value       = { for k, g in aws_cloudwatch_log_group.function : k => g.name }
}

output "bridge_role_arn" {
  description = "ARN of the bridge's IAM role (null without the bridge)."
  value       = try(aws_iam_role.bridge[0].arn, null)
}

output "schedule_role_arn" {
  description = "ARN of the role EventBridge Scheduler uses to invoke the scheduler function."
  value       = aws_iam_role.schedule.arn
}

output "bucket_name" {
  description = "Name of the backup bucket: use it as spec.backend.s3.bucket in the Repositories."
  value       = local.bucket_name
}

output "bucket_arn" {
  description = "ARN of the backup bucket."
  value       = local.bucket_arn
}

output "bucket_kms_key_arn" {
  description = "ARN of the KMS key the backup bucket encrypts with (null for an existing bucket without one)."
  value       = local.bucket_kms_key_arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key of the log groups and the alarm topic."
  value       = local.kms_key_arn
}

output "escrow_kms_key_arn" {
  description = "ARN of the KMS key the unseal-key escrows are sealed with (STASHLESS_ESCROW_KMS_KEY_ID): the module's own, or escrow_kms_key_arn."
  value       = local.escrow_kms_key_arn
}

output "event_bus_name" {
  description = "Name of the EventBridge bus for session events (STASHLESS_EVENT_BUS)."
  value       = aws_cloudwatch_event_bus.this.name
}

output "event_bus_arn" {
  description = "ARN of the EventBridge bus for session events."
  value       = aws_cloudwatch_event_bus.this.arn
}

output "dlq_urls" {
  description = "URLs of the dead-letter queues: one per function, `schedule` (undelivered ticks) and `events` (undelivered bus events)."
  value       = { for k, q in aws_sqs_queue.dlq : k => q.url }
}

output "dlq_arns" {
  description = "ARNs of the dead-letter queues, by name as in dlq_urls."
  value       = { for k, q in aws_sqs_queue.dlq : k => q.arn }
}

output "sns_topic_arn" {
  description = "ARN of the SNS topic the alarms notify."
  value       = aws_sns_topic.alarms.arn
}

output "schedule_arn" {
  description = "ARN of the EventBridge Scheduler schedule that ticks the scheduler function."
  value       = aws_scheduler_schedule.tick.arn
}

output "kubernetes_groups" {
  description = "Kubernetes group of each function (scheduler, backup, restore), as its EKS access entry maps its IAM role. Each group is bound to that function's rules only; bind extra rules to the group of the function that needs them."
  value       = local.kubernetes_groups
}

output "aws_auth_map_roles" {
  description = "With cluster_access = aws_auth: the mapRoles entries (rolearn, username, groups) to add to the aws-auth ConfigMap, one per function; empty with access entries."
  value = var.cluster_access == "aws_auth" ? [
    for f in sort(tolist(local.function_names)) : {
      rolearn  = aws_iam_role.function[f].arn
      username = "${var.name}-${f}"
      groups   = [local.kubernetes_groups[f]]
    }
  ] : []
}
