################################################################################
# General
################################################################################

variable "name" {
  description = "Name prefix for every resource the module creates (functions are `<name>-scheduler`, `<name>-backup`, `<name>-restore`)."
  type        = string
  default     = "stashless"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.name))
    error_message = "name must be 1-31 characters of lower-case letters, digits and '-', starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every AWS resource the module creates."
  type        = map(string)
  default     = {}
}

################################################################################
# Cluster and network
################################################################################

variable "cluster_name" {
  description = "Name of the existing EKS cluster that runs Vault/OpenBao and holds the Stash objects. The functions call eks:DescribeCluster on it and authenticate with their IAM role (EKS access entries)."
  type        = string
}

variable "namespaces" {
  description = "Namespaces the functions and the bridge act in (STASHLESS_NAMESPACES). Empty means all namespaces; when set, backup and restore get `get` on Secrets (and restore `patch` on the unsealer_secret_names) only in these namespaces (the scheduler gets none anywhere)."
  type        = list(string)
  default     = []

  validation {
    condition     = length(distinct(var.namespaces)) == length(var.namespaces) && alltrue([for n in var.namespaces : can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", n)) && length(n) <= 63])
    error_message = "namespaces must be distinct Kubernetes namespace names (lower-case letters, digits and '-', at most 63 characters)."
  }
}

variable "subnet_ids" {
  description = "Private subnets the functions run in: they must reach the Vault pods, the EKS API endpoint, and S3/EKS/EventBridge (NAT or VPC endpoints)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet: Vault and the cluster endpoint are inside the VPC."
  }
}

variable "security_group_ids" {
  description = "Security groups attached to the functions' network interfaces. Vault's and the EKS control plane's security groups must allow HTTPS from them."
  type        = list(string)

  validation {
    condition     = length(var.security_group_ids) > 0
    error_message = "security_group_ids must name at least one security group."
  }
}

################################################################################
# Functions
################################################################################

variable "lambda_zip_dir" {
  description = "Directory holding `<function>/bootstrap.zip` as `cargo lambda build --release --arm64 --output-format zip` writes them (scripts/build-lambdas.sh). Null means `target/lambda` at the root of this repository."
  type        = string
  default     = null
}

variable "architecture" {
  description = "Instruction set the zips were built for: `arm64` (Graviton, the default and cheaper) or `x86_64`."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

# Sized from what has been measured so far (a 64 MiB snapshot end to end: about 52 MiB peak
# RSS with the default 8 MiB x 4 parts in flight; the full benchmark table is to come in
# docs/benchmarks.md). Lambda's CPU share and network throughput scale with the memory
# setting, so backup and restore get more than they need to hold the data.
variable "scheduler_memory_size" {
  description = "Memory (MB) of the scheduler function."
  type        = number
  default     = 256
}

variable "scheduler_timeout" {
  description = "Timeout (seconds) of the scheduler function; a tick lists BackupConfigurations and creates a few objects."
  type        = number
  default     = 60
}

variable "backup_memory_size" {
  description = "Memory (MB) of the backup function. More memory also means more network throughput to S3."
  type        = number
  default     = 512
}

variable "backup_timeout" {
  description = "Timeout (seconds) of the backup function (Lambda's maximum is 900). The function stops 20 s before it, aborts the upload and marks the session Failed."
  type        = number
  default     = 900

  validation {
    condition     = var.backup_timeout >= 60 && var.backup_timeout <= 900
    error_message = "backup_timeout must be between 60 and 900 seconds."
  }
}

variable "restore_memory_size" {
  description = "Memory (MB) of the restore function."
  type        = number
  default     = 512
}

variable "restore_timeout" {
  description = "Timeout (seconds) of the restore function (Lambda's maximum is 900)."
  type        = number
  default     = 900

  validation {
    condition     = var.restore_timeout >= 60 && var.restore_timeout <= 900
    error_message = "restore_timeout must be between 60 and 900 seconds."
  }
}

variable "scheduler_reserved_concurrency" {
  description = "Reserved concurrency of the scheduler function. Null (the default) reserves none: ticks are idempotent, so overlapping ones create nothing twice, and a reservation fails on accounts whose concurrency quota is low (Lambda keeps 100 unreserved). Set 1 to keep ticks from overlapping where the quota allows."
  type        = number
  default     = null

  validation {
    condition     = var.scheduler_reserved_concurrency == null || try(var.scheduler_reserved_concurrency >= 1, false)
    error_message = "scheduler_reserved_concurrency must be null or at least 1 (0 would stop the function)."
  }
}

variable "backup_reserved_concurrency" {
  description = "Reserved concurrency of the backup function. Null leaves it unreserved: backups of different Vault clusters may run in parallel, and two backups of the same one are serialised by the functions themselves (the second is Skipped). Set a number to cap the load on S3 and the account's concurrency."
  type        = number
  default     = null

  validation {
    condition     = var.backup_reserved_concurrency == null || try(var.backup_reserved_concurrency >= 1, false)
    error_message = "backup_reserved_concurrency must be null or at least 1 (0 would stop the function)."
  }
}

variable "restore_reserved_concurrency" {
  description = "Reserved concurrency of the restore function. Null (the default) reserves none: two restores of one Vault never overlap whatever runs them (the later one fails with a reason), and a reservation fails on accounts whose concurrency quota is low (Lambda keeps 100 unreserved)."
  type        = number
  default     = null

  validation {
    condition     = var.restore_reserved_concurrency == null || try(var.restore_reserved_concurrency >= 1, false)
    error_message = "restore_reserved_concurrency must be null or at least 1 (0 would stop the function)."
  }
}

variable "tracing_mode" {
  description = "Lambda X-Ray tracing mode: `PassThrough` (no traces, no extra permissions) or `Active` (the roles get the AWSXRayDaemonWriteAccess policy)."
  type        = string
  default     = "PassThrough"

  validation {
    condition     = contains(["PassThrough", "Active"], var.tracing_mode)
    error_message = "tracing_mode must be PassThrough or Active."
  }
}

variable "code_signing_config_arn" {
  description = "ARN of an aws_lambda_code_signing_config to enforce on the functions (zips signed with AWS Signer). Null: no code signing."
  type        = string
  default     = null
}

variable "starting_deadline_seconds" {
  description = "STASHLESS_STARTING_DEADLINE_SECONDS: how late a cron slot may still start a backup (like a CronJob's startingDeadlineSeconds)."
  type        = number
  default     = 300
}

variable "part_size_mib" {
  description = "STASHLESS_PART_SIZE_MIB: S3 multipart part size of the backup upload. Memory used is about part size x (parts in flight + 1)."
  type        = number
  default     = 8

  validation {
    condition     = var.part_size_mib >= 5 && var.part_size_mib <= 512
    error_message = "part_size_mib must be between 5 (S3's minimum part size) and 512."
  }
}

variable "parts_in_flight" {
  description = "STASHLESS_PARTS_IN_FLIGHT: how many parts the backup uploads concurrently."
  type        = number
  default     = 4

  validation {
    condition     = var.parts_in_flight >= 1 && var.parts_in_flight <= 32
    error_message = "parts_in_flight must be between 1 and 32."
  }
}

variable "pushgateway_url" {
  description = "STASHLESS_PUSHGATEWAY_URL for backup and restore: a Prometheus Pushgateway that gets Stash-named metrics. Empty: metrics go to CloudWatch (embedded metric format) only."
  type        = string
  default     = ""
}

variable "maximum_retry_attempts" {
  description = "How often Lambda retries a failed asynchronous invocation (0-2) before it goes to the function's dead-letter queue."
  type        = number
  default     = 2

  validation {
    condition     = var.maximum_retry_attempts >= 0 && var.maximum_retry_attempts <= 2
    error_message = "maximum_retry_attempts must be 0, 1 or 2."
  }
}

variable "maximum_event_age_in_seconds" {
  description = "How long Lambda keeps retrying an asynchronous invocation (60-21600 s) before it goes to the dead-letter queue."
  type        = number
  default     = 3600

  validation {
    condition     = var.maximum_event_age_in_seconds >= 60 && var.maximum_event_age_in_seconds <= 21600
    error_message = "maximum_event_age_in_seconds must be between 60 and 21600."
  }
}

################################################################################
# Schedule and events
################################################################################

variable "schedule_enabled" {
  description = "Whether the one-minute schedule tick is enabled. Disable it to pause every schedule at once (e.g. during a maintenance window)."
  type        = bool
  default     = true
}

variable "schedule_maximum_retry_attempts" {
  description = "How often EventBridge Scheduler retries invoking the scheduler function (0-185) before the tick goes to the schedule's dead-letter queue."
  type        = number
  default     = 3

  validation {
    condition     = var.schedule_maximum_retry_attempts >= 0 && var.schedule_maximum_retry_attempts <= 185 && floor(var.schedule_maximum_retry_attempts) == var.schedule_maximum_retry_attempts
    error_message = "schedule_maximum_retry_attempts must be a whole number from 0 to 185."
  }
}

variable "schedule_maximum_event_age_in_seconds" {
  description = "How long EventBridge Scheduler keeps retrying a tick (60-86400 s). A tick older than the starting deadline is useless: the next one covers it."
  type        = number
  default     = 300

  validation {
    condition     = var.schedule_maximum_event_age_in_seconds >= 60 && var.schedule_maximum_event_age_in_seconds <= 86400
    error_message = "schedule_maximum_event_age_in_seconds must be from 60 to 86400."
  }
}

variable "event_bus_name" {
  description = "Name of the EventBridge bus the bridge and the scheduler put session events on. Null: `<name>`."
  type        = string
  default     = null
}

variable "event_retry_attempts" {
  description = "How often EventBridge retries delivering a bus event to a function (0-185) before it goes to the rules' dead-letter queue."
  type        = number
  default     = 10

  validation {
    condition     = var.event_retry_attempts >= 0 && var.event_retry_attempts <= 185 && floor(var.event_retry_attempts) == var.event_retry_attempts
    error_message = "event_retry_attempts must be a whole number from 0 to 185."
  }
}

variable "event_maximum_age_in_seconds" {
  description = "How long EventBridge keeps retrying a bus event (60-86400 s)."
  type        = number
  default     = 3600

  validation {
    condition     = var.event_maximum_age_in_seconds >= 60 && var.event_maximum_age_in_seconds <= 86400
    error_message = "event_maximum_age_in_seconds must be from 60 to 86400."
  }
}

variable "dlq_message_retention_seconds" {
  description = "How long failed events stay in the dead-letter queues. The default is SQS's maximum (14 days), so there is time to inspect and redrive them."
  type        = number
  default     = 1209600
}

################################################################################
# Backup bucket
################################################################################

variable "create_bucket" {
  description = "Create the backup bucket (versioned, SSE-KMS with its own key, TLS only, public access blocked). False: use the existing `bucket_name`."
  type        = bool
  default     = true
}

variable "bucket_name" {
  description = "Name of the backup bucket. With create_bucket = true, null means `<name>-<account id>-<region>`; with create_bucket = false it must name the existing bucket that the Repositories' spec.backend.s3.bucket points at."
  type        = string
  default     = null
}

variable "bucket_kms_key_arn" {
  description = "With create_bucket = false: the KMS key the existing bucket encrypts with, so the functions may use it. Null: the bucket uses SSE-S3 and no KMS permission is granted."
  type        = string
  default     = null
}

variable "s3_key_prefix" {
  description = "Key prefix the functions may use in the bucket (the Repositories' spec.backend.s3.prefix, or a common parent of them). Empty: the whole bucket."
  type        = string
  default     = ""
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete a bucket that still holds snapshots. Keep false in production."
  type        = bool
  default     = false
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which non-current object versions (overwritten or deleted by retention) are removed for good."
  type        = number
  default     = 30
}

variable "object_lock_mode" {
  description = "Default S3 Object Lock retention mode for new snapshots: null (no Object Lock), `GOVERNANCE` or `COMPLIANCE`. Can be turned on for a bucket the module already created (in place, no replacement); S3 never turns it off again. Retention then hides a snapshot behind a delete marker; its locked version expires after the lock and noncurrent_version_expiration_days."
  type        = string
  default     = null

  validation {
    condition     = var.object_lock_mode == null || contains(["GOVERNANCE", "COMPLIANCE"], coalesce(var.object_lock_mode, "none"))
    error_message = "object_lock_mode must be null, GOVERNANCE or COMPLIANCE."
  }
}

variable "object_lock_days" {
  description = "Default Object Lock retention in days (used when object_lock_mode is set)."
  type        = number
  default     = 30
}

variable "access_log_bucket" {
  description = "Name of an existing bucket that receives S3 server access logs of the backup bucket. Null: no access logging."
  type        = string
  default     = null
}

variable "access_log_prefix" {
  description = "Key prefix of the access logs in access_log_bucket. Null: `s3-access/<bucket>/`."
  type        = string
  default     = null
}

################################################################################
# Encryption and logs
################################################################################

variable "kms_key_arn" {
  description = "Customer managed KMS key for the log groups and the alarm topic. Its policy must let CloudWatch Logs and CloudWatch use it. Null: the module creates one."
  type        = string
  default     = null
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before a KMS key the module created is deleted (7-30 days, as KMS allows)."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_in_days >= 7 && var.kms_deletion_window_in_days <= 30 && floor(var.kms_deletion_window_in_days) == var.kms_deletion_window_in_days
    error_message = "kms_deletion_window_in_days must be a whole number from 7 to 30."
  }
}

variable "cloudwatch_logs_retention_in_days" {
  description = "Retention of the functions' log groups, in days: one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653), or 0 to keep logs forever."
  type        = number
  default     = 30

  validation {
    condition     = contains([0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.cloudwatch_logs_retention_in_days)
    error_message = "cloudwatch_logs_retention_in_days must be 0 or one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

################################################################################
# Unseal keys: escrow and the unsealer's stores
################################################################################

variable "escrow_kms_key_arn" {
  description = "ARN of a symmetric KMS key that seals the unseal-key escrow stored beside each snapshot (STASHLESS_ESCROW_KMS_KEY_ID of backup and restore). Null: the module creates one (`alias/<name>-escrow`, rotation on, administered by the account root, no service grants). A key of your own must let the backup role `kms:GenerateDataKey` and the restore role `kms:Decrypt` and `kms:GenerateDataKey` (the module's IAM policies grant exactly these, with the encryption context `stashless:purpose = unseal-keys`; AWS's default key policy, which defers to IAM, suffices). Deleting this key makes every escrow unreadable: keep it as long as the snapshots."
  type        = string
  default     = null

  validation {
    condition     = var.escrow_kms_key_arn == null || can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", coalesce(var.escrow_kms_key_arn, "-")))
    error_message = "escrow_kms_key_arn must be a KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<id>): IAM grants on an alias ARN do not cover the key."
  }
}

variable "pre_restore_keep_hours" {
  description = "STASHLESS_PRE_RESTORE_KEEP_HOURS: how long (hours) the snapshot a restore takes of its target first (the undo) is kept; backup's retention removes it after that, whatever the retention policy keeps."
  type        = number
  default     = 168

  validation {
    condition     = var.pre_restore_keep_hours >= 1 && floor(var.pre_restore_keep_hours) == var.pre_restore_keep_hours
    error_message = "pre_restore_keep_hours must be a whole number of at least 1."
  }
}

variable "unsealer_secret_names" {
  description = "Names of the Kubernetes Secrets the restore function may `patch` (the AppBinding's `spec.parameters.unsealer.mode.kubernetesSecret.secretName`, as KubeVault writes it, or its annotation `stashless.io/unseal-keys-secret`): a forced restore into another cluster writes the snapshot's escrowed unseal keys there. Granted like `get` on Secrets (in each of `namespaces`, or cluster-wide when that is empty), by name only. Empty: restore may patch no Secret, so no restore can write unseal keys into the cluster (a forced restore of a snapshot with escrowed keys then fails after the data is restored: the keys stay in the escrow and Vault stays sealed). Backup only reads these Secrets (`get`, which it has already)."
  type        = list(string)
  default     = []

  validation {
    condition     = length(distinct(var.unsealer_secret_names)) == length(var.unsealer_secret_names) && alltrue([for n in var.unsealer_secret_names : can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", n)) && length(n) <= 253])
    error_message = "unsealer_secret_names must be distinct Kubernetes object names (lower-case letters, digits, '-' and '.', at most 253 characters)."
  }
}

variable "unsealer_ssm_parameter_arns" {
  description = "ARNs (wildcards allowed) of the SSM parameters a KubeVault `awsKmsSsm` unsealer keeps the unseal keys and root token in (`<ssmKeyPrefix><prefix>-unseal-key-<i>`, `<ssmKeyPrefix><prefix>-root-token`; an ARN omits the name's leading `/`), e.g. `arn:aws:ssm:eu-west-1:111122223333:parameter/vault-unsealer/k8s.prod.vault.vault-*`. Backup gets `ssm:GetParameters` on them (to escrow the keys), restore `ssm:GetParameters`, `ssm:PutParameter` and `ssm:DeleteParameters` (its undo snapshot escrows the target's keys; a forced restore writes the snapshot's). Empty: no SSM permission at all."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.unsealer_ssm_parameter_arns : can(regex("^arn:[a-z-]+:ssm:[a-z0-9*-]+:[0-9]{12}:parameter/.+$", a))])
    error_message = "unsealer_ssm_parameter_arns must hold SSM parameter ARNs (arn:<partition>:ssm:<region>:<account>:parameter/<name>)."
  }
}

variable "unsealer_kms_key_arns" {
  description = "ARNs of the KMS keys a KubeVault `awsKmsSsm` unsealer encrypts each SSM value with (its `kmsKeyID`, as a key ARN). Backup gets `kms:Decrypt`, restore `kms:Decrypt` and `kms:Encrypt` on them, only with the encryption context `Tool = vault-unsealer` that KubeVault uses. Empty: no permission on any unsealer key."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.unsealer_kms_key_arns : can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", a))])
    error_message = "unsealer_kms_key_arns must hold KMS key ARNs (arn:<partition>:kms:<region>:<account>:key/<id>): IAM grants on an alias ARN do not cover the key."
  }
}

################################################################################
# Kubernetes
################################################################################

variable "kubernetes_group" {
  description = "Prefix of the Kubernetes groups the functions' IAM roles are mapped to (by their EKS access entries, or the aws-auth ConfigMap with cluster_access = aws_auth): each function gets its own group `<kubernetes_group>:<function>` (scheduler, backup, restore), bound to that function's rules only (output kubernetes_groups)."
  type        = string
  default     = "stashless:functions"

  validation {
    condition     = length(var.kubernetes_group) > 0 && !startswith(var.kubernetes_group, "system:")
    error_message = "kubernetes_group must be non-empty and must not start with system: (EKS refuses it)."
  }
}

variable "cluster_access" {
  description = "How the functions' IAM roles become Kubernetes identities: `access_entry` (EKS access entries; the cluster's authentication mode is API or API_AND_CONFIG_MAP) or `aws_auth` (clusters in CONFIG_MAP mode: the module creates no access entry and the output aws_auth_map_roles holds the mapRoles entries to add to the aws-auth ConfigMap, which the module never edits, since other tools own it)."
  type        = string
  default     = "access_entry"

  validation {
    condition     = contains(["access_entry", "aws_auth"], var.cluster_access)
    error_message = "cluster_access must be access_entry or aws_auth."
  }
}

variable "install_crds" {
  description = "Install the Stash CRDs (AppBinding, BackupBlueprint, BackupConfiguration, BackupSession, RestoreSession, Repository) generated from stashless's types. Keep false on clusters that already have them (Stash installed, or migrating from it)."
  type        = bool
  default     = false
}

variable "enable_bridge" {
  description = "Deploy the in-cluster watch bridge, which puts session events on the bus within a second of a change. Without it the scheduler's one-minute sweep still dispatches everything."
  type        = bool
  default     = true
}

variable "bridge_image" {
  description = "Image repository of the bridge (built from functions/bridge), without tag or digest, e.g. `123456789012.dkr.ecr.eu-west-1.amazonaws.com/stashless-bridge`. Required when enable_bridge is true."
  type        = string
  default     = null
}

variable "bridge_image_digest" {
  description = "Digest of the bridge image (`sha256:<64 hex>`): the Deployment runs `<bridge_image>@<digest>`, an immutable reference (a pod that may put events on the bus runs exactly the image that was reviewed). Required when enable_bridge is true."
  type        = string
  default     = null

  validation {
    condition     = var.bridge_image_digest == null || can(regex("^sha256:[0-9a-f]{64}$", coalesce(var.bridge_image_digest, "-")))
    error_message = "bridge_image_digest must look like sha256:<64 hex digits> (scripts/build-bridge-image.sh prints it; skopeo inspect --format '{{.Digest}}' docker://<image> shows a pushed one)."
  }
}

variable "bridge_namespace" {
  description = "Namespace the bridge runs in."
  type        = string
  default     = "stashless"
}

variable "create_bridge_namespace" {
  description = "Create bridge_namespace (false when it exists already)."
  type        = bool
  default     = true
}

variable "bridge_replicas" {
  description = "Replicas of the bridge. Duplicates are harmless (the functions claim each session), one is enough."
  type        = number
  default     = 1
}

variable "bridge_wait_for_rollout" {
  description = "Make apply wait until the bridge's Deployment has rolled out (a bad image or missing Pod Identity agent then fails the apply). False: apply returns once the Deployment is accepted, e.g. when the image is pushed after the apply."
  type        = bool
  default     = true
}

variable "bridge_identity" {
  description = "How the bridge gets its AWS identity: `pod_identity` (EKS Pod Identity; needs the eks-pod-identity-agent add-on) or `irsa` (IAM roles for service accounts; needs oidc_provider_arn)."
  type        = string
  default     = "pod_identity"

  validation {
    condition     = contains(["pod_identity", "irsa"], var.bridge_identity)
    error_message = "bridge_identity must be pod_identity or irsa."
  }
}

variable "bridge_https_egress_cidrs" {
  description = "Where the bridge's NetworkPolicy lets it connect on TCP 443 (the API server, EventBridge, STS). Empty: any address, since a NetworkPolicy cannot name hosts and EventBridge's public addresses change. Narrow it, e.g. to the VPC's CIDR, when the cluster endpoint is private and the VPC has `events` and `sts` interface endpoints (some CNIs, e.g. Cilium, do not match the API server by CIDR)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.bridge_https_egress_cidrs : can(cidrhost(c, 0))])
    error_message = "bridge_https_egress_cidrs must hold CIDR blocks such as 10.0.0.0/16."
  }
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider, for bridge_identity = irsa."
  type        = string
  default     = null
}

################################################################################
# Monitoring
################################################################################

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (the subscription must be confirmed). Null: no subscription."
  type        = string
  default     = null
}

variable "backup_configurations" {
  description = "BackupConfigurations to watch: an alarm fires when one has had no successful backup for max_age_hours (metric BackupSuccess in namespace stashless, dimension BackupConfiguration = <namespace>/<name>)."
  type = list(object({
    namespace     = string
    name          = string
    max_age_hours = number
  }))
  default = []

  validation {
    condition     = alltrue([for c in var.backup_configurations : c.max_age_hours >= 1 && c.max_age_hours <= 168])
    error_message = "max_age_hours must be between 1 and 168 (CloudWatch evaluates at most 7 days)."
  }
}
