# One role per function, each allowed only what its handler calls. The action lists are
# a contract kept in sync with tests/integration/test_infra.py (ALLOWED_ACTIONS).
data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each = local.functions

  name               = "${var.name}-${each.key}"
  description        = "Execution role of the ${var.name}-${each.key} function"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

resource "aws_iam_role_policy" "function" {
  for_each = local.functions

  name   = "${var.name}-${each.key}"
  role   = aws_iam_role.function[each.key].id
  policy = local.function_policies[each.key]
}

locals {
  function_policies = {
    sync        = data.aws_iam_policy_document.sync.json
    webhook     = data.aws_iam_policy_document.webhook.json
    worker      = data.aws_iam_policy_document.worker.json
    maintenance = data.aws_iam_policy_document.maintenance.json
  }

  table_actions = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchGetItem",
  ]
}

# What every function needs whatever its handler does: writing its own log group, and
# X-Ray segments (tracing is on). Each function's policy below starts from this one.
data "aws_iam_policy_document" "basic" {
  for_each = local.functions

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }

  # X-Ray segment upload has no resource-level permissions: "*" is the only resource.
  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

data "aws_iam_policy_document" "sync" {
  # Its own log group and X-Ray segments (data.aws_iam_policy_document.basic).
  source_policy_documents = [data.aws_iam_policy_document.basic["sync"].json]

  statement {
    sid       = "Table"
    actions   = local.table_actions
    resources = [aws_dynamodb_table.main.arn]
  }

  # Token encryption (and the encrypted environment and SecureStrings).
  statement {
    sid       = "TokenKey"
    actions   = ["kms:Encrypt", "kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }

  # The client secret, to refresh Strava tokens.
  statement {
    sid       = "ClientSecret"
    actions   = ["ssm:GetParameter"]
    resources = ["${local.ssm_arn_prefix}${local.ssm_strava_client_secret}"]
  }

  # Where to tell the conditions, and the heartbeat (both optional, README "Being told").
  statement {
    sid     = "NotifyAndHeartbeat"
    actions = ["ssm:GetParameter"]
    resources = [
      "${local.ssm_arn_prefix}${local.ssm_notify_urls}",
      "${local.ssm_arn_prefix}${local.ssm_heartbeat_url}",
    ]
  }

  # G2S_GARMIN_PROXY (optional, README.md "Garmin through a proxy").
  statement {
    sid       = "GarminProxy"
    actions   = ["ssm:GetParameter"]
    resources = ["${local.ssm_arn_prefix}${local.ssm_garmin_proxy}"]
  }
}

data "aws_iam_policy_document" "webhook" {
  # Its own log group and X-Ray segments (data.aws_iam_policy_document.basic).
  source_policy_documents = [data.aws_iam_policy_document.basic["webhook"].json]

  statement {
    sid       = "EnqueueEvents"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events.arn]
  }

  # GenerateDataKey: sending to the KMS-encrypted queue. Decrypt: the encrypted
  # environment and the SecureString.
  statement {
    sid       = "QueueAndEnvironmentKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }

  statement {
    sid       = "VerifyToken"
    actions   = ["ssm:GetParameter"]
    resources = ["${local.ssm_arn_prefix}${local.ssm_strava_verify_token}"]
  }

  # The subscription id `webhook subscribe` stored: one GetItem of the APP items only.
  statement {
    sid       = "StoredSubscription"
    actions   = ["dynamodb:GetItem"]
    resources = [aws_dynamodb_table.main.arn]

    condition {
      test     = "ForAllValues:StringEquals"
      variable = "dynamodb:LeadingKeys"
      values   = ["APP"]
    }
  }
}

data "aws_iam_policy_document" "worker" {
  # Its own log group and X-Ray segments (data.aws_iam_policy_document.basic).
  source_policy_documents = [data.aws_iam_policy_document.basic["worker"].json]

  statement {
    sid       = "Table"
    actions   = local.table_actions
    resources = [aws_dynamodb_table.main.arn]
  }

  # Token encryption; Decrypt also reads the encrypted queue and environment, and
  # GenerateDataKey sends deferred events back to the KMS-encrypted queue.
  statement {
    sid       = "TokenKey"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }

  statement {
    sid       = "ClientSecret"
    actions   = ["ssm:GetParameter"]
    resources = ["${local.ssm_arn_prefix}${local.ssm_strava_client_secret}"]
  }

  statement {
    sid       = "ConsumeEvents"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.events.arn]
  }

  # An event deferred because the Strava budget is spent goes back onto the queue as
  # a new, delayed message, so waiting never spends the original's receives (and never
  # reaches the DLQ). The events queue only: nothing the worker does writes the DLQ.
  statement {
    sid       = "RequeueDeferredEvents"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events.arn]
  }
}

data "aws_iam_policy_document" "maintenance" {
  # Its own log group and X-Ray segments (data.aws_iam_policy_document.basic).
  source_policy_documents = [data.aws_iam_policy_document.basic["maintenance"].json]

  # The mirror, the pass times and the Strava budget; reads Strava as the worker does.
  statement {
    sid       = "Table"
    actions   = local.table_actions
    resources = [aws_dynamodb_table.main.arn]
  }

  # Token encryption (a refreshed Strava token is stored encrypted), and the encrypted
  # environment and SecureStrings. Nothing here sends or receives events.
  statement {
    sid       = "TokenKey"
    actions   = ["kms:Encrypt", "kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }

  # The client secret, to refresh Strava tokens.
  statement {
    sid       = "ClientSecret"
    actions   = ["ssm:GetParameter"]
    resources = ["${local.ssm_arn_prefix}${local.ssm_strava_client_secret}"]
  }

  # Where to tell the conditions (optional, README "Being told").
  statement {
    sid       = "Notify"
    actions   = ["ssm:GetParameter"]
    resources = ["${local.ssm_arn_prefix}${local.ssm_notify_urls}"]
  }

  # The dead-letter queue's depth opens the mirror.dead_letters condition; nothing
  # here receives or sends.
  statement {
    sid       = "DeadLetterDepth"
    actions   = ["sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.events_dlq.arn]
  }
}
