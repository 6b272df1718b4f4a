terraform {
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.90"
    }
  }

  # Remote state (recommended for anything but a trial run; see README.md "State").
  # Create the bucket once, with versioning and encryption on, then uncomment and run
  # `terraform init -migrate-state`. Terraform >= 1.10 locks with `use_lockfile`; older
  # versions need a DynamoDB lock table (`dynamodb_table = "..."`) instead.
  #
  # backend "s3" {
  #   bucket       = "my-terraform-state-bucket"
  #   key          = "garmin2strava/terraform.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge({ Project = "garmin2strava" }, var.tags)
  }
}
