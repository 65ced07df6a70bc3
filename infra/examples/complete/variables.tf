variable "region" {
  description = "AWS region of the EKS cluster."
  type        = string
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster that runs Vault/OpenBao."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the functions (they must reach Vault, the EKS endpoint, S3, EKS and EventBridge)."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups for the functions; Vault's and the control plane's groups must allow HTTPS from them."
  type        = list(string)
}

variable "namespaces" {
  description = "Namespaces holding the Stash objects (empty: all)."
  type        = list(string)
  default     = ["vault"]
}

variable "bridge_image" {
  description = "Image repository of the watch bridge (built from functions/bridge), without tag."
  type        = string
}

variable "bridge_image_digest" {
  description = "Digest (sha256:...) of the bridge image to run."
  type        = string
}

variable "alarm_email" {
  description = "Where alarms go (confirm the subscription e-mail)."
  type        = string
  default     = null
}

variable "backup_configurations" {
  description = "BackupConfigurations whose backups must not get older than max_age_hours."
  type = list(object({
    namespace     = string
    name          = string
    max_age_hours = number
  }))
  default = [{ namespace = "vault", name = "vault-backup", max_age_hours = 26 }]
}

variable "unsealer_secret_names" {
  description = "Secrets a KubeVault kubernetesSecret unsealer keeps the unseal keys in (the VaultServer's spec.unsealer.mode.kubernetesSecret.secretName): the restore function may patch these, by name, in the namespaces above."
  type        = list(string)
  default     = ["vault-keys"]
}

variable "unsealer_ssm_key_prefix" {
  description = "With a KubeVault awsKmsSsm unsealer: its ssmKeyPrefix (parameters in var.region). Null: no SSM permission."
  type        = string
  default     = null
}

variable "unsealer_kms_key_arn" {
  description = "With a KubeVault awsKmsSsm unsealer: ARN of its kmsKeyID (the key the SSM values are encrypted with). Null: no permission on an unsealer key."
  type        = string
  default     = null
}
