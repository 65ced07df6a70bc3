provider "aws" {
  region = var.region
}

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

# Functions, schedule, bus, bucket, alarms and RBAC; no in-cluster bridge: the scheduler
# dispatches the BackupSessions it creates at once, and its sweep dispatches sessions created
# by hand (a RestoreSession) within about two minutes.
module "stashless" {
  source = "../../modules/stashless"

  cluster_name       = var.cluster_name
  subnet_ids         = var.subnet_ids
  security_group_ids = var.security_group_ids
  enable_bridge      = false
}
