variable "aws_region" {
  description = "AWS region to deploy into, e.g. eu-west-1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.aws_region))
    error_message = "aws_region must look like an AWS region name, e.g. eu-west-1."
  }
}

variable "name" {
  description = "Prefix for every resource name (table, functions, queues, key alias, log groups)."
  type        = string
  default     = "garmin2strava"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags applied to every resource (merged with Project = garmin2strava)."
  type        = map(string)
  default     = {}
}

variable "user_id" {
  description = "The single-user account's id (G2S_USER_ID); must match the id used when the tokens were stored."
  type        = string
  default     = "default"

  validation {
    condition     = can(regex("^[\\w.@-]{1,64}$", var.user_id))
    error_message = "user_id must be 1-64 characters of letters, digits, '_', '.', '@' or '-'."
  }
}

variable "strava_client_id" {
  description = "Your Strava API application's client id (not a secret; shown on strava.com/settings/api)."
  type        = number

  validation {
    condition     = var.strava_client_id > 0 && floor(var.strava_client_id) == var.strava_client_id
    error_message = "strava_client_id must be a positive integer."
  }
}

variable "strava_subscription_id" {
  description = "Strava webhook subscription id, known after the subscription is created (see README.md). null accepts none yet."
  type        = number
  default     = null

  validation {
    condition     = var.strava_subscription_id == null || try(var.strava_subscription_id > 0, false)
    error_message = "strava_subscription_id must be null or a positive integer."
  }
}

variable "ssm_parameter_prefix" {
  description = "SSM path holding the SecureString parameters strava_client_secret and strava_verify_token, created outside Terraform (see README.md \"Secrets\")."
  type        = string
  default     = "/garmin2strava"

  validation {
    condition     = can(regex("^(/[A-Za-z0-9_.-]+)+$", var.ssm_parameter_prefix))
    error_message = "ssm_parameter_prefix must be an absolute SSM path without a trailing slash, e.g. /garmin2strava."
  }
}

variable "activity_types" {
  description = "Garmin typeKeys to upload (G2S_ACTIVITY_TYPES, comma-separated, or *). Empty keeps the application default (the running family)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-z0-9_]+(,[a-z0-9_]+)*|\\*)?$", var.activity_types))
    error_message = "activity_types must be a comma-separated list of lowercase Garmin typeKeys, or *."
  }
}

variable "sync_schedule_expression" {
  description = "EventBridge schedule for the sync function."
  type        = string
  default     = "rate(1 minute)"

  validation {
    condition     = can(regex("^(rate|cron)\\(.+\\)$", var.sync_schedule_expression))
    error_message = "sync_schedule_expression must be an EventBridge rate(...) or cron(...) expression."
  }
}

variable "sync_timeout_seconds" {
  description = "Timeout of the sync function, in seconds (also the lease it holds is renewed within it)."
  type        = number
  default     = 120

  validation {
    condition     = var.sync_timeout_seconds >= 30 && var.sync_timeout_seconds <= 900
    error_message = "sync_timeout_seconds must be between 30 and 900."
  }
}

variable "sync_reserved_concurrency" {
  description = "Reserved concurrency of the sync function. Small on purpose: the store lease already serialises per account."
  type        = number
  default     = 2

  validation {
    condition     = var.sync_reserved_concurrency >= 1 && var.sync_reserved_concurrency <= 10
    error_message = "sync_reserved_concurrency must be between 1 and 10."
  }
}

variable "maintenance_schedule_expression" {
  description = "EventBridge schedule for the maintenance function (reconciliation of the accounts that are due, then the catch-up of pending streams)."
  type        = string
  default     = "rate(1 hour)"

  validation {
    condition     = can(regex("^(rate|cron)\\(.+\\)$", var.maintenance_schedule_expression))
    error_message = "maintenance_schedule_expression must be an EventBridge rate(...) or cron(...) expression."
  }
}

variable "maintenance_timeout_seconds" {
  description = "Timeout of the maintenance function, in seconds; it stops 20 s before it, and the next run goes on."
  type        = number
  default     = 300

  validation {
    condition     = var.maintenance_timeout_seconds >= 60 && var.maintenance_timeout_seconds <= 900
    error_message = "maintenance_timeout_seconds must be between 60 and 900."
  }
}

variable "mirror_reconcile_hours" {
  description = "G2S_MIRROR_RECONCILE_HOURS: each account's reconciliation pass runs this often (the maintenance schedule looks for due passes); 0 turns reconciliation off."
  type        = number
  default     = 24

  validation {
    condition     = var.mirror_reconcile_hours >= 0 && var.mirror_reconcile_hours <= 720
    error_message = "mirror_reconcile_hours must be between 0 and 720."
  }
}

variable "mirror_sweep_days" {
  description = "G2S_MIRROR_SWEEP_DAYS: every this many days an account's due reconciliation pass lists its whole history (1 read per 200 activities, plus 1 per mirrored activity Strava no longer lists), so a dropped delete or rename of an old activity is repaired; 0 never."
  type        = number
  default     = 7

  validation {
    condition     = var.mirror_sweep_days >= 0 && var.mirror_sweep_days <= 365
    error_message = "mirror_sweep_days must be between 0 and 365."
  }
}

variable "mirror_streams" {
  description = "G2S_MIRROR_STREAMS: the activity streams the mirror keeps (comma-separated, e.g. time,heartrate,latlng). Empty keeps none."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-z_]+(,[a-z_]+)*)?$", var.mirror_streams))
    error_message = "mirror_streams must be a comma-separated list of lowercase stream names."
  }

  # The names G2S_MIRROR_STREAMS accepts (domain/streams.py STREAM_TYPES; test_infra
  # keeps the two lists equal): a misspelt one fails the plan, not every cold start.
  validation {
    condition = alltrue([
      for name in compact(split(",", var.mirror_streams)) :
      contains(["time", "heartrate", "latlng", "altitude", "cadence", "watts", "velocity_smooth", "distance"], name)
    ])
    error_message = "mirror_streams: names among time, heartrate, latlng, altitude, cadence, watts, velocity_smooth, distance."
  }
}

# Strava's new API host (README.md "Strava's new API host"): from 2027-01-04 the API is
# at https://api-v3.strava.com with no /api/v3 prefix, while OAuth stays on www.
variable "strava_api_url" {
  description = "G2S_STRAVA_API_URL: Strava's API base, path included (https://api-v3.strava.com for the new host). Null keeps https://www.strava.com/api/v3."
  type        = string
  default     = null

  validation {
    condition     = var.strava_api_url == null || can(regex("^https://[^/?#]+(/[^?#]*)?$", var.strava_api_url))
    error_message = "strava_api_url must be an https:// URL (or null)."
  }
}

variable "strava_oauth_url" {
  description = "G2S_STRAVA_OAUTH_URL: the origin of Strava's OAuth (token, revoke). Null keeps https://www.strava.com, where OAuth stays."
  type        = string
  default     = null

  validation {
    condition     = var.strava_oauth_url == null || can(regex("^https://[^/?#]+/?$", var.strava_oauth_url))
    error_message = "strava_oauth_url must be an https:// origin (or null)."
  }
}

variable "webhook_reserved_concurrency" {
  description = "Reserved concurrency of the webhook function (caps what a flood of requests can cost)."
  type        = number
  default     = 10

  validation {
    condition     = var.webhook_reserved_concurrency >= 1 && var.webhook_reserved_concurrency <= 100
    error_message = "webhook_reserved_concurrency must be between 1 and 100."
  }
}

variable "worker_reserved_concurrency" {
  description = "Reserved concurrency of the queue worker. Small, because every event may cost a Strava read request."
  type        = number
  default     = 2

  validation {
    condition     = var.worker_reserved_concurrency >= 2 && var.worker_reserved_concurrency <= 20
    error_message = "worker_reserved_concurrency must be between 2 (the SQS trigger's minimum) and 20."
  }
}

variable "worker_timeout_seconds" {
  description = "Timeout of the queue worker, in seconds; the queue's visibility timeout is six times this."
  type        = number
  default     = 60

  validation {
    condition     = var.worker_timeout_seconds >= 10 && var.worker_timeout_seconds <= 120
    error_message = "worker_timeout_seconds must be between 10 and 120."
  }
}

variable "worker_batch_size" {
  description = "SQS messages handed to one worker invocation (events for one activity in a batch share one fetch)."
  type        = number
  default     = 10

  validation {
    condition     = var.worker_batch_size >= 1 && var.worker_batch_size <= 10
    error_message = "worker_batch_size must be between 1 and 10."
  }
}

variable "max_receive_count" {
  description = "Failed deliveries of one queue message before it moves to the dead-letter queue (deferrals for the Strava budget do not count)."
  type        = number
  default     = 3

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 20
    error_message = "max_receive_count must be between 1 and 20."
  }
}

variable "lambda_memory_mb" {
  description = "Memory of each function, in MB (CPU scales with it)."
  type        = number
  default     = 512

  validation {
    condition     = var.lambda_memory_mb >= 128 && var.lambda_memory_mb <= 10240
    error_message = "lambda_memory_mb must be between 128 and 10240."
  }
}

variable "layer_zip_path" {
  description = "Path of the dependencies layer zip built by `make layer` (relative paths are relative to this directory)."
  type        = string
  default     = "../build/lambda-layer.zip"

  validation {
    condition     = endswith(var.layer_zip_path, ".zip")
    error_message = "layer_zip_path must name a .zip file."
  }
}

variable "package_zip_path" {
  description = "Path of the code package zip built by `make lambda-package` (relative paths are relative to this directory)."
  type        = string
  default     = "../build/lambda-package.zip"

  validation {
    condition     = endswith(var.package_zip_path, ".zip")
    error_message = "package_zip_path must name a .zip file."
  }
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups, in days."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "audit_retention_days" {
  description = "Days audit events are kept before DynamoDB's TTL removes them (G2S_AUDIT_RETENTION_DAYS)."
  type        = number
  default     = 7

  validation {
    condition     = var.audit_retention_days >= 1 && var.audit_retention_days <= 365
    error_message = "audit_retention_days must be between 1 and 365."
  }
}

variable "log_level" {
  description = "Log level of the functions (G2S_LOG_LEVEL)."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be one of DEBUG, INFO, WARNING, ERROR."
  }
}

variable "api_throttle_rate_limit" {
  description = "Steady-state requests per second the webhook API accepts (Strava sends a handful)."
  type        = number
  default     = 10

  validation {
    condition     = var.api_throttle_rate_limit >= 1 && var.api_throttle_rate_limit <= 1000
    error_message = "api_throttle_rate_limit must be between 1 and 1000."
  }
}

variable "api_throttle_burst_limit" {
  description = "Burst of requests the webhook API accepts."
  type        = number
  default     = 20

  validation {
    condition     = var.api_throttle_burst_limit >= 1 && var.api_throttle_burst_limit <= 5000
    error_message = "api_throttle_burst_limit must be between 1 and 5000."
  }
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (confirm the subscription mail). null subscribes nobody."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alarm_email))
    error_message = "alarm_email must be null or an e-mail address."
  }
}

variable "queue_age_alarm_seconds" {
  description = "Alarm when the oldest message on the event queue is older than this, in seconds."
  type        = number
  default     = 900

  validation {
    condition     = var.queue_age_alarm_seconds >= 60
    error_message = "queue_age_alarm_seconds must be at least 60."
  }
}

variable "dlq_redrive_allow_policy" {
  description = "Allow only the events queue to use the dead-letter queue (its RedriveAllowPolicy). Keep true; `make tf-check` turns it off because moto keeps no such policy."
  type        = bool
  default     = true
}

variable "table_deletion_protection" {
  description = "Protect the DynamoDB table against deletion (turn off only to tear the deployment down)."
  type        = bool
  default     = true
}
