"""garmin2strava."""
