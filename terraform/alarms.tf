# Alarms go to one SNS topic; subscribe an address with alarm_email or add your own.
resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.main.arn
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  # Every alarm, by the name it gets after "<name>-": each function's errors, throttles
  # and duration (> 80 % of its timeout), and the event queues. All of them fire when
  # the metric, over 5 minutes, exceeds the threshold (see aws_cloudwatch_metric_alarm.main).
  alarms = merge(
    merge([
      for key, fn in local.functions : {
        "${key}-errors" = {
          description = "${var.name}-${key} raised errors (see its log group)."
          namespace   = "AWS/Lambda"
          metric      = "Errors"
          dimensions  = { FunctionName = aws_lambda_function.function[key].function_name }
          statistic   = "Sum"
          threshold   = 0
        }
        "${key}-throttles" = {
          description = "${var.name}-${key} was throttled (reserved concurrency reached)."
          namespace   = "AWS/Lambda"
          metric      = "Throttles"
          dimensions  = { FunctionName = aws_lambda_function.function[key].function_name }
          statistic   = "Sum"
          threshold   = 0
        }
        "${key}-duration" = {
          description = "${var.name}-${key} ran for more than 80% of its timeout."
          namespace   = "AWS/Lambda"
          metric      = "Duration"
          dimensions  = { FunctionName = aws_lambda_function.function[key].function_name }
          statistic   = "Maximum"
          threshold   = fn.timeout * 1000 * 0.8
        }
      }
    ]...),
    {
      "events-dlq-not-empty" = {
        description = "Webhook events gave up after ${var.max_receive_count} attempts; inspect ${aws_sqs_queue.events_dlq.name} and redrive."
        namespace   = "AWS/SQS"
        metric      = "ApproximateNumberOfMessagesVisible"
        dimensions  = { QueueName = aws_sqs_queue.events_dlq.name }
        statistic   = "Maximum"
        threshold   = 0
      }
      # The maintenance function logs a failed step and goes on (the other step still
      # runs), so its Errors stay 0: its own EMF figure says a step failed.
      "maintenance-steps-failed" = {
        description = "${var.name}-maintenance: reconciliation or the streams catch-up failed (see its log group, maintenance.step_failed)."
        namespace   = "garmin2strava"
        metric      = "StepsFailed"
        dimensions  = { function = "maintenance" }
        statistic   = "Sum"
        threshold   = 0
      }
      "events-oldest-message" = {
        description = "Webhook events wait on ${aws_sqs_queue.events.name} for longer than ${var.queue_age_alarm_seconds} s (worker failing or throttled)."
        namespace   = "AWS/SQS"
        metric      = "ApproximateAgeOfOldestMessage"
        dimensions  = { QueueName = aws_sqs_queue.events.name }
        statistic   = "Maximum"
        threshold   = var.queue_age_alarm_seconds
      }
    },
  )
}

resource "aws_cloudwatch_metric_alarm" "main" {
  for_each = local.alarms

  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  period              = 300
  evaluation_periods  = 1
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# The alarms were five resources (three of them per function) before they were folded
# into aws_cloudwatch_metric_alarm.main; these keep an existing deployment's alarms.
moved {
  from = aws_cloudwatch_metric_alarm.function_errors["sync"]
  to   = aws_cloudwatch_metric_alarm.main["sync-errors"]
}

moved {
  from = aws_cloudwatch_metric_alarm.function_errors["webhook"]
  to   = aws_cloudwatch_metric_alarm.main["webhook-errors"]
}

moved {
  from = aws_cloudwatch_metric_alarm.function_errors["worker"]
  to   = aws_cloudwatch_metric_alarm.main["worker-errors"]
}

moved {
  from = aws_cloudwatch_metric_alarm.function_throttles["sync"]
  to   = aws_cloudwatch_metric_alarm.main["sync-throttles"]
}

moved {
  from = aws_cloudwatch_metric_alarm.function_throttles["webhook"]
  to   = aws_cloudwatch_metric_alarm.main["webhook-throttles"]
}

moved {
  from = aws_cloudwatch_metric_alarm.function_throttles["worker"]
  to   = aws_cloudwatch_metric_alarm.main["worker-throttles"]
}

moved {
  from = aws_cloudwatch_metric_alarm.function_duration["sync"]
  to   = aws_cloudwatch_metric_alarm.main["sync-duration"]
}

moved {
  from = aws_cloudwatch_metric_alarm.function_duration["webhook"]
  to   = aws_cloudwatch_metric_alarm.main["webhook-duration"]
}

moved {
  from = aws_cloudwatch_metric_alarm.function_duration["worker"]
  to   = aws_cloudwatch_metric_alarm.main["worker-duration"]
}

moved {
  from = aws_cloudwatch_metric_alarm.dlq_not_empty
  to   = aws_cloudwatch_metric_alarm.main["events-dlq-not-empty"]
}

moved {
  from = aws_cloudwatch_metric_alarm.queue_oldest_message
  to   = aws_cloudwatch_metric_alarm.main["events-oldest-message"]
}
