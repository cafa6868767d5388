#!/usr/bin/env python3
"""Invoke a function with boto3 and print StatusCode, FunctionError and the payload.

    invoke_boto3.py [FUNCTION_NAME] [PAYLOAD]

FUNCTION_NAME defaults to "function", PAYLOAD to {"key":"value"}. The endpoint comes from
LAMBDATX_ENDPOINT (default http://localhost:8080). Exits with status 1 on a function error.
"""

import os
import sys

import boto3
from botocore.config import Config


def main(argv):
    name = argv[1] if len(argv) > 1 else "function"
    payload = argv[2] if len(argv) > 2 else '{"key":"value"}'
    client = boto3.client(
        "lambda",
        endpoint_url=os.environ.get("LAMBDATX_ENDPOINT", "http://localhost:8080"),
        # lambdatx ignores signatures; botocore still needs something to sign with.
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id="x",
        aws_secret_access_key="x",
        # boto3 retries read timeouts (60 s by default): a long invocation would run again.
        config=Config(read_timeout=900, connect_timeout=5, retries={"max_attempts": 0}),
    )
    answer = client.invoke(FunctionName=name, Payload=payload.encode())
    print("StatusCode:", answer["StatusCode"])
    print("FunctionError:", answer.get("FunctionError"))
    print("Payload:", answer["Payload"].read().decode("utf-8", "replace"))
    return 1 if answer.get("FunctionError") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
