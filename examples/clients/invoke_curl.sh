#!/usr/bin/env bash
# Invoke a function through the Invoke API with curl and show the whole HTTP answer.
#
#   invoke_curl.sh [FUNCTION_NAME] [PAYLOAD]
#
# FUNCTION_NAME defaults to "function" (aws-lambda-rie's path), PAYLOAD to {"key":"value"}.
# The endpoint comes from LAMBDATX_ENDPOINT (default http://localhost:8080).
set -euo pipefail

endpoint=${LAMBDATX_ENDPOINT:-http://localhost:8080}
name=${1:-function}
payload=${2:-'{"key":"value"}'}

# -i: the status line and headers matter (x-amzn-RequestId, X-Amz-Function-Error).
printf '%s' "$payload" | curl -sS -i -X POST --data-binary @- \
    "$endpoint/2015-03-31/functions/$name/invocations"
echo
