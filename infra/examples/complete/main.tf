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
