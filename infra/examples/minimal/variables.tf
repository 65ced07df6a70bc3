variable "region" {
  description = "AWS region of the EKS cluster."
  type        = string
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster that runs Vault/OpenBao."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the functions."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups for the functions."
  type        = list(string)
}
