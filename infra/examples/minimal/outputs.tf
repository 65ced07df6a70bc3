output "bucket_name" {
  description = "Backup bucket: spec.backend.s3.bucket of the Repositories."
  value       = module.stashless.bucket_name
}
