data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  # Secrets are referenced by NAME only: Terraform never reads their values, so they
  # never reach the plan or the state (README.md "Secrets").
  ssm_strava_client_secret = "${var.ssm_parameter_prefix}/strava_client_secret"
  ssm_strava_verify_token  = "${var.ssm_parameter_prefix}/strava_verify_token"
  ssm_arn_prefix           = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter"
  # Optional (README.md "Being told"): made by hand when wanted; a function whose
  # parameter does not exist notifies nobody, or pings nothing.
  ssm_notify_urls   = "${var.ssm_parameter_prefix}/notify_urls"
  ssm_heartbeat_url = "${var.ssm_parameter_prefix}/heartbeat_url"
  # Optional (README.md "Garmin through a proxy"): G2S_GARMIN_PROXY for the sync, the
  # one function that talks to Garmin; a SecureString since it may carry a password.
  ssm_garmin_proxy = "${var.ssm_parameter_prefix}/garmin_proxy"

  handler_module = "garmin2strava.entrypoints.aws_lambda"

  functions = {
    sync = {
      handler     = "${local.handler_module}.sync_handler.handler"
      description = "Uploads new Garmin activities to Strava (scheduled)."
      timeout     = var.sync_timeout_seconds
      concurrency = var.sync_reserved_concurrency
    }
    webhook = {
      handler     = "${local.handler_module}.webhook_handler.handler"
      description = "Strava webhook: subscription handshake and event intake onto the queue."
      timeout     = 10
      concurrency = var.webhook_reserved_concurrency
    }
    worker = {
      handler     = "${local.handler_module}.worker_handler.handler"
      description = "Applies queued Strava webhook events to the DynamoDB mirror."
      timeout     = var.worker_timeout_seconds
      concurrency = var.worker_reserved_concurrency
    }
    maintenance = {
      handler     = "${local.handler_module}.maintenance_handler.handler"
      description = "Repairs the Strava mirror (reconciliation) and reads pending streams (scheduled)."
      timeout     = var.maintenance_timeout_seconds
      # One pass at a time: two would list and fetch the same activities twice.
      concurrency = 1
    }
  }

  # Settings every function reads (README.md "Settings"); never a secret value.
  common_environment = merge(
    {
      G2S_STORE                = "dynamodb"
      G2S_DYNAMODB_TABLE       = aws_dynamodb_table.main.name
      G2S_KMS_KEY_ID           = aws_kms_key.main.arn
      G2S_QUEUE_URL            = aws_sqs_queue.events.url
      G2S_USER_ID              = var.user_id
      G2S_LOG_LEVEL            = var.log_level
      G2S_LOG_FORMAT           = "json"
      G2S_AUDIT_RETENTION_DAYS = tostring(var.audit_retention_days)
      STRAVA_CLIENT_ID         = tostring(var.strava_client_id)
      # The worker reads streams after creates; the maintenance function reconciles and
      # catches up the streams deferred for the budget.
      G2S_MIRROR_RECONCILE_HOURS = tostring(var.mirror_reconcile_hours)
      G2S_MIRROR_SWEEP_DAYS      = tostring(var.mirror_sweep_days)
    },
    var.activity_types == "" ? {} : { G2S_ACTIVITY_TYPES = var.activity_types },
    var.mirror_streams == "" ? {} : { G2S_MIRROR_STREAMS = var.mirror_streams },
    var.strava_subscription_id == null ? {} : { STRAVA_SUBSCRIPTION_ID = tostring(var.strava_subscription_id) },
    var.strava_api_url == null ? {} : { G2S_STRAVA_API_URL = var.strava_api_url },
    var.strava_oauth_url == null ? {} : { G2S_STRAVA_OAUTH_URL = var.strava_oauth_url },
  )

  # Each function is told only the names of the parameters it may read.
  # The sync tells the conditions and pings the heartbeat after each invocation; the
  # maintenance function tells those it sees (the dead-letter queue's depth).
  function_environment = {
    sync = {
      G2S_SSM_STRAVA_CLIENT_SECRET = local.ssm_strava_client_secret
      G2S_SSM_NOTIFY_URLS          = local.ssm_notify_urls
      G2S_SSM_HEARTBEAT_URL        = local.ssm_heartbeat_url
      G2S_SSM_GARMIN_PROXY         = local.ssm_garmin_proxy
    }
    webhook = { G2S_SSM_STRAVA_VERIFY_TOKEN = local.ssm_strava_verify_token }
    worker  = { G2S_SSM_STRAVA_CLIENT_SECRET = local.ssm_strava_client_secret }
    maintenance = {
      G2S_SSM_STRAVA_CLIENT_SECRET = local.ssm_strava_client_secret
      G2S_SSM_NOTIFY_URLS          = local.ssm_notify_urls
      G2S_DEAD_LETTER_QUEUE_URL    = aws_sqs_queue.events_dlq.url
    }
  }
}
