output "bucket_name" {
  description = "Backup bucket: spec.backend.s3.bucket of the Repositories."
  value       = module.stashless.bucket_name
}

output "function_names" {
  description = "The Lambda functions."
  value       = module.stashless.function_names
}

output "function_role_arns" {
  description = "IAM roles of the functions (Vault AWS auth roles can bind to these)."
  value       = module.stashless.function_role_arns
}

output "event_bus_name" {
  description = "EventBridge bus for session events."
  value       = module.stashless.event_bus_name
}

output "dlq_urls" {
  description = "Dead-letter queues to watch and redrive."
  value       = module.stashless.dlq_urls
}

output "sns_topic_arn" {
  description = "Alarm topic."
  value       = module.stashless.sns_topic_arn
}

output "escrow_kms_key_arn" {
  description = "KMS key the unseal-key escrows are sealed with (only the restore function may decrypt with it)."
  value       = module.stashless.escrow_kms_key_arn
}
