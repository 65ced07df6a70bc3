################################################################################
# Kubernetes identity of the functions: EKS access entry → one group per function → RBAC
#
# With cluster_access = access_entry (the default) the cluster's authentication mode must
# include the EKS API (API or API_AND_CONFIG_MAP); with aws_auth the caller adds the output
# aws_auth_map_roles to the aws-auth ConfigMap (shared with other tools: never edited here).
# No EKS access policy is associated: each function's ClusterRole says exactly what it may
# do, and no function holds another's rules (the scheduler reads no Secrets, backup cannot
# write RestoreSessions, restore cannot write BackupSessions).
################################################################################

locals {
  # `<kubernetes_group>:<function>`, e.g. stashless:functions:backup.
  kubernetes_groups = { for f in local.function_names : f => "${var.kubernetes_group}:${f}" }

  # restore's `patch` on the unsealer Secrets it writes a new cluster's unseal keys into (a
  # forced restore carrying escrowed keys): only on the Secrets unsealer_secret_names names,
  # and no rule at all when it is empty. Opt-in, so not in the restore's file, which holds
  # what every deployment needs.
  unsealer_secret_rules = length(var.unsealer_secret_names) == 0 ? [] : [{
    apiGroups     = [""]
    resources     = ["secrets"]
    verbs         = ["patch"]
    resourceNames = var.unsealer_secret_names
  }]

  # Each function's rules (shape: rules: [{apiGroups, resources, verbs}]; a Rust test
  # compares each file with the calls that function makes and runs it with only these),
  # and restore's opt-in rule above.
  function_rules = { for f in local.function_names : f => concat(
    yamldecode(file("${path.module}/rbac/${f}-clusterrole.yaml")).rules,
    f == "restore" ? local.unsealer_secret_rules : [],
  ) }

  # Rules on Secrets (backup and restore: `get` the AppBinding's token, the Repository's
  # storage credentials and the unseal keys; restore: `patch` the unsealer Secrets by name)
  # are cluster-wide when the functions act in all namespaces, else granted by a Role in
  # each listed namespace.
  cluster_rules = {
    for f, rules in local.function_rules : f => [
      for r in rules : r if length(var.namespaces) == 0 || !contains(r.resources, "secrets")
    ]
  }
  namespaced_rules = {
    for f, rules in local.function_rules : f => [for r in rules : r if contains(r.resources, "secrets")]
  }
  namespaced_grants = {
    for pair in setproduct(sort([for f, rules in local.namespaced_rules : f if length(rules) > 0]), var.namespaces) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], namespace = pair[1] }
  }
}

resource "aws_eks_access_entry" "function" {
  for_each = var.cluster_access == "access_entry" ? local.function_names : toset([])

  cluster_name      = var.cluster_name
  principal_arn     = aws_iam_role.function[each.key].arn
  kubernetes_groups = [local.kubernetes_groups[each.key]]
  type              = "STANDARD"

  tags = local.tags
}

resource "kubernetes_cluster_role_v1" "function" {
  for_each = local.function_names

  metadata {
    name   = "${var.name}-${each.key}"
    labels = local.k8s_labels
  }

  dynamic "rule" {
    for_each = local.cluster_rules[each.key]
    content {
      api_groups     = rule.value.apiGroups
      resources      = rule.value.resources
      resource_names = try(rule.value.resourceNames, null)
      verbs          = rule.value.verbs
    }
  }
}

resource "kubernetes_cluster_role_binding_v1" "function" {
  for_each = local.function_names

  metadata {
    name   = "${var.name}-${each.key}"
    labels = local.k8s_labels
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.function[each.key].metadata[0].name
  }

  subject {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Group"
    name      = local.kubernetes_groups[each.key]
  }
}

resource "kubernetes_role_v1" "secrets" {
  for_each = local.namespaced_grants

  metadata {
    name      = "${var.name}-${each.value.function}-secrets"
    namespace = each.value.namespace
    labels    = local.k8s_labels
  }

  dynamic "rule" {
    for_each = local.namespaced_rules[each.value.function]
    content {
      api_groups     = rule.value.apiGroups
      resources      = rule.value.resources
      resource_names = try(rule.value.resourceNames, null)
      verbs          = rule.value.verbs
    }
  }
}

resource "kubernetes_role_binding_v1" "secrets" {
  for_each = local.namespaced_grants

  metadata {
    name      = "${var.name}-${each.value.function}-secrets"
    namespace = each.value.namespace
    labels    = local.k8s_labels
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.secrets[each.key].metadata[0].name
  }

  subject {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Group"
    name      = local.kubernetes_groups[each.value.function]
  }
}

################################################################################
# Stash CRDs, for clusters without Stash (generated from stashless's types)
################################################################################

locals {
  crd_files = [
    "appbindings.appcatalog.appscode.com",
    "backupblueprints.stash.appscode.com",
    "backupconfigurations.stash.appscode.com",
    "backupsessions.stash.appscode.com",
    "repositories.stash.appscode.com",
    "restoresessions.stash.appscode.com",
  ]
}

resource "kubernetes_manifest" "crd" {
  for_each = var.install_crds ? toset(local.crd_files) : toset([])

  manifest = yamldecode(file("${path.module}/../../crds/generated/${each.key}.yaml"))
}

################################################################################
# The watch bridge (optional): Stash kinds → EventBridge, from inside the cluster
# (mirrors infra/manifests/bridge/bridge.yaml)
################################################################################

locals {
  bridge_name = "${var.name}-bridge"
  oidc_issuer = replace(coalesce(var.oidc_provider_arn, "none"), "/^.*oidc-provider\\//", "")

  k8s_labels = {
    "app.kubernetes.io/part-of"    = "stashless"
    "app.kubernetes.io/managed-by" = "terraform"
  }
  bridge_labels = merge(local.k8s_labels, {
    "app.kubernetes.io/name" = local.bridge_name
  })
  bridge_namespace = var.enable_bridge && var.create_bridge_namespace ? kubernetes_namespace_v1.bridge[0].metadata[0].name : var.bridge_namespace
}

resource "kubernetes_namespace_v1" "bridge" {
  count = var.enable_bridge && var.create_bridge_namespace ? 1 : 0

  metadata {
    name   = var.bridge_namespace
    labels = local.k8s_labels
  }
}

resource "kubernetes_service_account_v1" "bridge" {
  count = var.enable_bridge ? 1 : 0

  metadata {
    name        = local.bridge_name
    namespace   = local.bridge_namespace
    labels      = local.bridge_labels
    annotations = var.bridge_identity == "irsa" ? { "eks.amazonaws.com/role-arn" = aws_iam_role.bridge[0].arn } : {}
  }
}

resource "aws_eks_pod_identity_association" "bridge" {
  count = var.enable_bridge && var.bridge_identity == "pod_identity" ? 1 : 0

  cluster_name    = var.cluster_name
  namespace       = local.bridge_namespace
  service_account = kubernetes_service_account_v1.bridge[0].metadata[0].name
  role_arn        = aws_iam_role.bridge[0].arn

  tags = local.tags
}

resource "kubernetes_cluster_role_v1" "bridge" {
  count = var.enable_bridge ? 1 : 0

  metadata {
    name   = local.bridge_name
    labels = local.bridge_labels
  }

  rule {
    api_groups = ["stash.appscode.com"]
    resources  = ["backupsessions", "restoresessions", "backupconfigurations"]
    verbs      = ["list", "watch"]
  }

  # whether a change is stashless's to dispatch (functions/stashless/src/serve.rs)
  rule {
    api_groups = ["stash.appscode.com"]
    resources  = ["backupconfigurations"]
    verbs      = ["get"]
  }

  rule {
    api_groups = ["appcatalog.appscode.com"]
    resources  = ["appbindings"]
    verbs      = ["get"]
  }
}

resource "kubernetes_cluster_role_binding_v1" "bridge" {
  count = var.enable_bridge ? 1 : 0

  metadata {
    name   = local.bridge_name
    labels = local.bridge_labels
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.bridge[0].metadata[0].name
  }

  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.bridge[0].metadata[0].name
    namespace = local.bridge_namespace
  }
}

resource "kubernetes_deployment_v1" "bridge" {
  count = var.enable_bridge ? 1 : 0

  metadata {
    name      = local.bridge_name
    namespace = local.bridge_namespace
    labels    = local.bridge_labels
  }

  wait_for_rollout = var.bridge_wait_for_rollout

  spec {
    # Duplicates are harmless (the functions claim each session), but one is enough.
    replicas = var.bridge_replicas

    selector {
      match_labels = { "app.kubernetes.io/name" = local.bridge_name }
    }

    template {
      metadata {
        labels = local.bridge_labels
      }

      spec {
        service_account_name = kubernetes_service_account_v1.bridge[0].metadata[0].name
        # The bridge watches the Stash kinds with this ServiceAccount's token.
        automount_service_account_token = true

        security_context {
          run_as_non_root = true
          run_as_user     = 65532
          run_as_group    = 65532
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "bridge"
          image             = "${var.bridge_image}@${var.bridge_image_digest}"
          image_pull_policy = "Always"

          env {
            name  = "STASHLESS_EVENT_BUS"
            value = aws_cloudwatch_event_bus.this.name
          }
          env {
            name  = "STASHLESS_NAMESPACES"
            value = join(",", var.namespaces)
          }
          env {
            name  = "STASHLESS_HEALTH_ADDR"
            value = "0.0.0.0:8080"
          }
          env {
            name  = "AWS_REGION"
            value = local.region
          }

          port {
            name           = "health"
            container_port = 8080
          }

          liveness_probe {
            http_get {
              path = "/healthz"
              port = "health"
            }
            period_seconds    = 20
            failure_threshold = 6
          }

          readiness_probe {
            http_get {
              path = "/healthz"
              port = "health"
            }
            period_seconds = 5
          }

          resources {
            requests = {
              cpu    = "10m"
              memory = "32Mi"
            }
            limits = {
              cpu    = "500m"
              memory = "128Mi"
            }
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            run_as_user                = 65532
            capabilities {
              drop = ["ALL"]
            }
          }
        }
      }
    }
  }

  # Credentials must exist before the first pod starts (Pod Identity is read at pod start).
  depends_on = [aws_eks_pod_identity_association.bridge, aws_iam_role_policy.bridge]

  lifecycle {
    precondition {
      condition     = var.bridge_image != null && var.bridge_image_digest != null
      error_message = "enable_bridge = true needs bridge_image and bridge_image_digest (build the image from functions/bridge)."
    }
  }
}

# What the bridge may reach, where the cluster enforces NetworkPolicies (the VPC CNI with
# network policy enabled, Calico, Cilium; elsewhere it is inert). A NetworkPolicy knows pods,
# namespaces, CIDRs and ports, never host names (mirrors infra/manifests/bridge/bridge.yaml).
resource "kubernetes_network_policy_v1" "bridge" {
  count = var.enable_bridge ? 1 : 0

  metadata {
    name      = local.bridge_name
    namespace = local.bridge_namespace
    labels    = local.bridge_labels
  }

  spec {
    pod_selector {
      match_labels = { "app.kubernetes.io/name" = local.bridge_name }
    }
    policy_types = ["Ingress", "Egress"]

    # /healthz for the kubelet's probes: the kubelet is not a pod and node addresses are not
    # known here, so the port is open to any source (it answers only "ok" or "not yet").
    ingress {
      ports {
        protocol = "TCP"
        port     = "8080"
      }
    }

    # Cluster DNS (CoreDNS keeps the kube-dns label), for the AWS endpoints' names.
    egress {
      to {
        namespace_selector {
          match_labels = { "kubernetes.io/metadata.name" = "kube-system" }
        }
        pod_selector {
          match_labels = { "k8s-app" = "kube-dns" }
        }
      }
      ports {
        protocol = "UDP"
        port     = "53"
      }
      ports {
        protocol = "TCP"
        port     = "53"
      }
    }

    # HTTPS to the API server (EKS serves it on 443), EventBridge and STS: any address unless
    # bridge_https_egress_cidrs narrows it (the API server's endpoints are not pods a
    # selector could name, and EventBridge has no fixed addresses).
    egress {
      dynamic "to" {
        for_each = var.bridge_https_egress_cidrs
        content {
          ip_block {
            cidr = to.value
          }
        }
      }
      ports {
        protocol = "TCP"
        port     = "443"
      }
    }

    # EKS Pod Identity: the node's agent serves credentials on these link-local addresses.
    dynamic "egress" {
      for_each = var.bridge_identity == "pod_identity" ? [1] : []
      content {
        to {
          ip_block {
            cidr = "169.254.170.23/32"
          }
        }
        to {
          ip_block {
            cidr = "fd00:ec2::23/128"
          }
        }
        ports {
          protocol = "TCP"
          port     = "80"
        }
      }
    }
  }
}
