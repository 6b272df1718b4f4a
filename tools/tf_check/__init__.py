"""`make tf-check`: terraform/ formatted, initialised offline where a provider mirror
exists, validated, planned and applied against moto server on loopback, the deployed
functions smoke-tested under AWS's runtime interface client, then destroyed.

The modules: `config` writes what terraform reads (CLI config, provider override,
variables) and finds the provider mirror; `terraform` runs the steps; `runtime_api`
is the Lambda Runtime API on loopback; `smoke` invokes the deployed handlers.
Run as `python -m tf_check` with tools/ on PYTHONPATH (the Makefile does)."""
