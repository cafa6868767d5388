#!/usr/bin/env bash
# Invoke a function with the AWS CLI and print the CLI's answer, then the payload.
#
#   invoke_awscli.sh [FUNCTION_NAME] [PAYLOAD]
#
# FUNCTION_NAME defaults to "function", PAYLOAD to {"key":"value"}. The endpoint comes from
# LAMBDATX_ENDPOINT (default http://localhost:8080). Works with AWS CLI v1 and v2.
set -euo pipefail

endpoint=${LAMBDATX_ENDPOINT:-http://localhost:8080}
name=${1:-function}
payload=${2:-'{"key":"value"}'}

# lambdatx ignores signatures, but the CLI refuses to sign without credentials and a region.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-x}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-x}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}

args=()
# v1 sends --payload as is; v2 expects base64 unless told otherwise.
if aws --version 2>&1 | grep -q '^aws-cli/2'; then
    args+=(--cli-binary-format raw-in-base64-out)
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
aws lambda invoke --endpoint-url "$endpoint" --function-name "$name" \
    --payload "$payload" "${args[@]}" "$out"
cat "$out"
echo
