"""Test and benchmark harnesses: they start garmin2strava's own code against the
emulators in g2s_sandbox (`serve` as a real process, the Lambda handlers on
moto), so unlike the emulators they import the production code. Beside the package in
src/ for the tests and bench/ only: the wheel ships `garmin2strava` alone
([tool.hatch.build.targets.wheel]), and `garmin2strava demo` needs none of this."""
