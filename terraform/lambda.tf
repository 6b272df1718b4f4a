# One code package (the garmin2strava source tree) shared by the four functions, built by
# `make lambda-package`, and one layer with the locked third-party dependencies built by
# `make layer`. Both are built outside terraform, byte-identical for the same sources, so
# terraform needs no provider beyond aws and plans no update while the code is unchanged.

resource "aws_lambda_layer_version" "dependencies" {
  layer_name               = "${var.name}-dependencies"
  description              = "garmin2strava third-party dependencies (uv.lock, manylinux x86_64, CPython 3.12)"
  filename                 = var.layer_zip_path
  source_code_hash         = filebase64sha256(var.layer_zip_path)
  compatible_runtimes      = ["python3.12"]
  compatible_architectures = ["x86_64"]
}

resource "aws_cloudwatch_log_group" "function" {
  for_each = local.functions

  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_lambda_function" "function" {
  for_each = local.functions

  # checkov:skip=CKV_AWS_117:No VPC: the functions only reach public AWS APIs, Strava and Garmin; a VPC would add a NAT gateway's cost and nothing to protect.
  # checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile and a signing step in the build; the package is built and deployed by the same trusted operator.
  # checkov:skip=CKV_AWS_116:No function-level DLQ: the webhook (API Gateway) and the worker (SQS mapping, which has its own DLQ) are invoked synchronously, and the sync and maintenance functions are re-run by their schedules with async retries off (their state is in the table), so a failed scheduled event has nothing worth keeping.
  function_name                  = "${var.name}-${each.key}"
  description                    = each.value.description
  role                           = aws_iam_role.function[each.key].arn
  runtime                        = "python3.12"
  architectures                  = ["x86_64"]
  handler                        = each.value.handler
  filename                       = var.package_zip_path
  source_code_hash               = filebase64sha256(var.package_zip_path)
  layers                         = [aws_lambda_layer_version.dependencies.arn]
  timeout                        = each.value.timeout
  memory_size                    = var.lambda_memory_mb
  reserved_concurrent_executions = each.value.concurrency
  kms_key_arn                    = aws_kms_key.main.arn

  environment {
    variables = merge(local.common_environment, local.function_environment[each.key])
  }

  tracing_config {
    mode = "Active"
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function[each.key].name
  }

  depends_on = [aws_iam_role_policy.function]
}

# --- sync: every minute, one invocation at a time per schedule tick -------------------

resource "aws_cloudwatch_event_rule" "sync" {
  name                = "${var.name}-sync"
  description         = "Runs the garmin2strava sync cycle."
  schedule_expression = var.sync_schedule_expression
}

resource "aws_cloudwatch_event_target" "sync" {
  rule = aws_cloudwatch_event_rule.sync.name
  arn  = aws_lambda_function.function["sync"].arn

  # A missed tick is made good by the next one; retrying stale ticks only piles up.
  retry_policy {
    maximum_event_age_in_seconds = 60
    maximum_retry_attempts       = 0
  }
}

resource "aws_lambda_permission" "sync_schedule" {
  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.function["sync"].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.sync.arn
}

resource "aws_lambda_function_event_invoke_config" "sync" {
  function_name                = aws_lambda_function.function["sync"].function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 60
}

# --- maintenance: reconciliation and the streams catch-up, hourly ----------------------

resource "aws_cloudwatch_event_rule" "maintenance" {
  name                = "${var.name}-maintenance"
  description         = "Runs the garmin2strava mirror reconciliation and streams catch-up."
  schedule_expression = var.maintenance_schedule_expression
}

resource "aws_cloudwatch_event_target" "maintenance" {
  rule = aws_cloudwatch_event_rule.maintenance.name
  arn  = aws_lambda_function.function["maintenance"].arn

  # The next tick looks for due passes again; a retried stale tick only piles up.
  retry_policy {
    maximum_event_age_in_seconds = 60
    maximum_retry_attempts       = 0
  }
}

resource "aws_lambda_permission" "maintenance_schedule" {
  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.function["maintenance"].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.maintenance.arn
}

resource "aws_lambda_function_event_invoke_config" "maintenance" {
  function_name                = aws_lambda_function.function["maintenance"].function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 60
}

# --- worker: SQS batches with partial failure reporting -------------------------------

resource "aws_lambda_event_source_mapping" "worker" {
  event_source_arn                   = aws_sqs_queue.events.arn
  function_name                      = aws_lambda_function.function["worker"].arn
  batch_size                         = var.worker_batch_size
  maximum_batching_window_in_seconds = 5
  function_response_types            = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.worker_reserved_concurrency
  }
}
