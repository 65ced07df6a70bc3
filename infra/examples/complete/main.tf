provider "aws" {
  region = var.region
}

# The Kubernetes provider talks to the existing cluster as whoever runs Terraform (their
# EKS access entry or aws-auth mapping must allow creating RBAC objects, a namespace and a
# Deployment).
data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

# A fresh token for every provider call (`aws eks get-token`, the AWS CLI): a token read
# once at plan time (data "aws_eks_cluster_auth") expires after about 15 minutes, so a long
# apply or a saved plan would meet 401 halfway.
provider "kubernetes" {
  host                   = data.aws_eks_cluster.this.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)

  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", var.cluster_name, "--region", var.region]
  }
}

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

locals {
  # A KubeVault awsKmsSsm unsealer keeps each key in SSM parameter
  # `<ssmKeyPrefix><prefix>-unseal-key-<i>` (and `...-root-token`); a parameter ARN omits
  # the name's leading '/'. Everything under the prefix: keep it for the unsealer alone.
  unsealer_ssm_parameter_arns = var.unsealer_ssm_key_prefix == null ? [] : [
    "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter/${trimprefix(var.unsealer_ssm_key_prefix, "/")}*",
  ]
}

module "stashless" {
  source = "../../modules/stashless"

  cluster_name       = var.cluster_name
  namespaces         = var.namespaces
  subnet_ids         = var.subnet_ids
  security_group_ids = var.security_group_ids

  # Zips from scripts/build-lambdas.sh (target/lambda/<function>/bootstrap.zip).
  architecture = "arm64"

  # The bucket: use module.stashless.bucket_name as spec.backend.s3.bucket and this prefix
  # as spec.backend.s3.prefix in the Repositories.
  s3_key_prefix                      = "vault/"
  noncurrent_version_expiration_days = 30
  object_lock_mode                   = "GOVERNANCE"
  object_lock_days                   = 14

  # Unseal keys: escrowed with each snapshot under the module's own KMS key (output
  # escrow_kms_key_arn). A forced restore into another cluster writes them into that
  # cluster's unsealer Secret (these names only) or SSM parameters (with their KMS key).
  # The undo snapshot a restore takes first is kept as long as Object Lock holds it anyway.
  unsealer_secret_names       = var.unsealer_secret_names
  unsealer_ssm_parameter_arns = local.unsealer_ssm_parameter_arns
  unsealer_kms_key_arns       = var.unsealer_kms_key_arn == null ? [] : [var.unsealer_kms_key_arn]
  pre_restore_keep_hours      = 14 * 24

  enable_bridge       = true
  bridge_image        = var.bridge_image
  bridge_image_digest = var.bridge_image_digest
  bridge_identity     = "pod_identity"

  alarm_email           = var.alarm_email
  backup_configurations = var.backup_configurations

  tags = {
    Project = "stashless"
  }
}
