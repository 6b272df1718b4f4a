# Strava's webhook endpoint: GET (subscription handshake) and POST (events).
resource "aws_apigatewayv2_api" "webhook" {
  name          = "${var.name}-webhook"
  protocol_type = "HTTP"
  description   = "Strava webhook for garmin2strava"
}

resource "aws_apigatewayv2_integration" "webhook" {
  api_id                 = aws_apigatewayv2_api.webhook.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.function["webhook"].invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 5000
}

# The callback path carries a secret (derived from the verify token, see README.md):
# the handler compares {secret} in constant time and answers a wrong one exactly as
# API Gateway answers a path without a route (404). No route exists for the bare
# /webhooks/strava.
resource "aws_apigatewayv2_route" "webhook" {
  for_each = toset(["GET", "POST"])

  # checkov:skip=CKV_AWS_309:Strava calls this route without credentials; the handler checks the path secret, then hub.verify_token (GET) or our subscription_id (POST).
  api_id    = aws_apigatewayv2_api.webhook.id
  route_key = "${each.key} /webhooks/strava/{secret}"
  target    = "integrations/${aws_apigatewayv2_integration.webhook.id}"
}

resource "aws_cloudwatch_log_group" "api_access" {
  name              = "/aws/apigateway/${var.name}-webhook"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_apigatewayv2_stage" "webhook" {
  api_id      = aws_apigatewayv2_api.webhook.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit  = var.api_throttle_rate_limit
    throttling_burst_limit = var.api_throttle_burst_limit
  }

  # The path and query string stay out of the access log: the path carries the
  # callback secret and the handshake's query hub.verify_token ($context.routeKey is
  # the route's template, "/webhooks/strava/{secret}", never the secret).
  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId      = "$context.requestId"
      sourceIp       = "$context.identity.sourceIp"
      requestTime    = "$context.requestTime"
      httpMethod     = "$context.httpMethod"
      routeKey       = "$context.routeKey"
      status         = "$context.status"
      responseLength = "$context.responseLength"
      latencyMs      = "$context.responseLatency"
      integrationErr = "$context.integrationErrorMessage"
    })
  }
}

resource "aws_lambda_permission" "webhook_api" {
  statement_id  = "AllowApiGatewayWebhookRoutes"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.function["webhook"].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.webhook.execution_arn}/*/*/webhooks/strava/{secret}"
}
