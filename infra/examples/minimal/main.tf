provider "aws" {
  region = var.region
}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_eks_cluster_auth" "this" {
  name = var.cluster_name
}

provider "kubernetes" {
  host                   = data.aws_eks_cluster.this.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
  token                  = data.aws_eks_cluster_auth.this.token
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
