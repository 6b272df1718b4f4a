# Strava webhook events: the webhook function enqueues, the worker consumes. A message
# that fails max_receive_count times lands in the dead-letter queue (alarmed). An event
# the worker defers (Strava budget spent) is not a failure: the worker sends it again as
# a new message delayed until the budget reopens (at most 900 s, SQS's limit), so a long
# budget outage spends no receives.
resource "aws_sqs_queue" "events" {
  name                              = "${var.name}-events"
  kms_master_key_id                 = aws_kms_key.main.arn
  kms_data_key_reuse_period_seconds = 3600
  # Six times the worker timeout, as AWS recommends for Lambda event sources.
  visibility_timeout_seconds = var.worker_timeout_seconds * 6
  message_retention_seconds  = 4 * 24 * 3600

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.events_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

resource "aws_sqs_queue" "events_dlq" {
  name                              = "${var.name}-events-dlq"
  kms_master_key_id                 = aws_kms_key.main.arn
  kms_data_key_reuse_period_seconds = 3600
  # The longest SQS allows: dead letters wait for a human.
  message_retention_seconds = 14 * 24 * 3600
}

# Only the events queue may use the DLQ. Off only for `make tf-check`: moto keeps no
# RedriveAllowPolicy, so the provider would wait for it forever (terraform/README.md).
# An existing deployment's policy becomes instance [0] by itself: terraform moves an
# object to index 0 when count is added, with no replacement.
resource "aws_sqs_queue_redrive_allow_policy" "events_dlq" {
  count = var.dlq_redrive_allow_policy ? 1 : 0

  queue_url = aws_sqs_queue.events_dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.events.arn]
  })
}
