"""The whole daemon in-process, with real runtime processes and real callers (curl, boto3)."""

from __future__ import annotations

import json
import os
import time

import pytest
import pytest_twisted
from twisted.internet import defer

from daemon import (
    bash_echo,
    boto3_client,
    config,
    curl,
    in_thread,
    invoke_json,
    python_echo,
    start,
    wait_gone,
)


@pytest_twisted.ensureDeferred
async def test_bash_example_echoes_and_rejects_non_json():
    """The bash+curl example echoes JSON objects and strings; a non-JSON body gets 400."""
    daemon = await start(bash_echo())
    try:
        status, headers, body = await curl("-XPOST", daemon.invoke_url(), "-d", '{"key": "value"}')
        assert status == 200 and json.loads(body) == {"key": "value"}
        assert headers["x-amz-executed-version"] == "$LATEST"
        assert "x-amz-function-error" not in headers
        status, headers, body = await curl("-XPOST", daemon.invoke_url(), "-d", '"hello"')
        assert status == 200 and json.loads(body) == "hello"
        status, headers, body = await curl("-XPOST", daemon.invoke_url(), "-d", "hello")
        assert status == 400
        assert headers["x-amzn-errortype"] == "InvalidRequestContentException"
        assert json.loads(body)["message"].startswith("Could not parse request body into json")
        status, headers, body = await curl("-XPOST", daemon.invoke_url(), "-d", '{"fail": true}')
        assert status == 200 and headers["x-amz-function-error"] == "Unhandled"
        assert "errorMessage" in json.loads(body)
        status, headers, body = await curl("-XPOST", daemon.invoke_url(), "-d", '{"after": 1}')
        assert status == 200 and json.loads(body) == {"after": 1}
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_awslambdaric_with_boto3():
    """boto3 invokes the awslambdaric example by every name form; errors keep AWS's shape."""
    daemon = await start(python_echo())
    client = boto3_client(daemon)
    try:
        for name in (
            "function",
            "echo",
            "echo:$LATEST",
            "000000000000:function:echo",
            "arn:aws:lambda:us-east-1:000000000000:function:echo",
            "arn:aws:lambda:us-east-1:000000000000:function:echo:$LATEST",
        ):
            r = await in_thread(client.invoke, FunctionName=name, Payload=b'{"n": 1}')
            assert r["StatusCode"] == 200, name
            assert json.loads(r["Payload"].read()) == {"n": 1}
            assert "FunctionError" not in r
            assert r["ExecutedVersion"] == "$LATEST"
        r = await in_thread(client.invoke, FunctionName="echo", Payload=b'{"fail": true}')
        assert r["FunctionError"] == "Unhandled"
        doc = json.loads(r["Payload"].read())
        assert doc["errorType"] == "ValueError" and doc["errorMessage"] == "boom"
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await in_thread(client.invoke, FunctionName="other", Payload=b"{}")
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await in_thread(client.invoke, FunctionName="echo:7", Payload=b"{}")
        with pytest.raises(client.exceptions.InvalidRequestContentException):
            await in_thread(client.invoke, FunctionName="echo", Payload=b"hello")
        r = await in_thread(client.invoke, FunctionName="echo", InvocationType="DryRun", Payload=b"{}")
        assert r["StatusCode"] == 204
        r = await in_thread(client.invoke, FunctionName="echo", Payload=b'{"x": 2}', LogType="Tail")
        import base64

        log = base64.b64decode(r["LogResult"]).decode()
        assert "START RequestId:" in log and "REPORT RequestId:" in log
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_awscli_invoke(tmp_path):
    """`aws lambda invoke --endpoint-url` (awscli v1 sends the payload raw) echoes the event."""
    daemon = await start(python_echo())
    out = tmp_path / "out.json"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
    try:
        import subprocess

        result = await in_thread(
            subprocess.run,
            ["aws", "lambda", "invoke", "--endpoint-url", daemon.url, "--function-name", "function",
             "--payload", '{"key":"value"}', str(out)],
            capture_output=True, env=env, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["StatusCode"] == 200
        assert json.loads(out.read_text()) == {"key": "value"}
        result = await in_thread(
            subprocess.run,
            ["aws", "lambda", "invoke", "--endpoint-url", daemon.url, "--function-name", "nope",
             "--payload", "{}", str(out)],
            capture_output=True, env=env, timeout=60,
        )
        assert result.returncode != 0 and b"ResourceNotFoundException" in result.stderr
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_next_headers_and_runtime_environment():
    """The runtime sees every /next header and the environment of configuration.md §8."""
    daemon = await start(config(environ=dict(os.environ, AMQP_PASSWORD="secret", PORT="1", LOG_LEVEL="DEBUG")))
    try:
        ctx = "eyJjdXN0b20iOnsiYSI6MX19"  # {"custom":{"a":1}}
        status, headers, doc = await invoke_json(
            daemon, {"pid": True}, "echo:$LATEST",
            "-H", f"X-Amz-Client-Context: {ctx}", "-H", "X-Amzn-Trace-Id: Root=1-5e1b4151-5ac6c58f5ef0b4c0e6b0c9f1",
        )
        h = doc["headers"]
        assert h["lambda-runtime-aws-request-id"] == headers["x-amzn-requestid"]
        deadline = int(h["lambda-runtime-deadline-ms"])
        assert abs(deadline - (time.time() + 3) * 1000) < 3000
        assert h["lambda-runtime-invoked-function-arn"] == "arn:aws:lambda:us-east-1:000000000000:function:echo:$LATEST"
        assert h["lambda-runtime-trace-id"] == "Root=1-5e1b4151-5ac6c58f5ef0b4c0e6b0c9f1"
        assert json.loads(h["lambda-runtime-client-context"]) == {"custom": {"a": 1}}
        env = doc["env"]
        assert doc["pid"] == doc["pgid"]
        assert env["AWS_LAMBDA_FUNCTION_NAME"] == "echo"
        assert env["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")
        assert env["_INSTANCE"] == "0"
        for secret in ("AMQP_PASSWORD", "PORT", "LOG_LEVEL"):
            assert secret not in env
        status, headers, doc = await invoke_json(daemon, {"pid": True})
        assert "lambda-runtime-client-context" not in doc["headers"]
        assert doc["headers"]["lambda-runtime-trace-id"].startswith("Root=1-")
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_timeout_kills_the_group_and_next_invoke_works(tmp_path):
    """A timeout answers Sandbox.Timedout, kills runtime and grandchild, and re-initialises."""
    daemon = await start(config(timeout=1.0))
    pidfile = tmp_path / "grandchild.pid"
    try:
        _, _, first = await invoke_json(daemon, {"pid": True})
        start_t = time.monotonic()
        status, headers, doc = await invoke_json(daemon, {"grandchild": str(pidfile)})
        assert 0.9 < time.monotonic() - start_t < 3
        assert status == 200 and headers["x-amz-function-error"] == "Unhandled"
        assert doc["errorType"] == "Sandbox.Timedout"
        assert doc["errorMessage"].endswith("Error: Task timed out after 1.00 seconds")
        assert await in_thread(wait_gone, first["pid"])
        assert await in_thread(wait_gone, int(pidfile.read_text()))
        _, _, again = await invoke_json(daemon, {"pid": True})
        assert again["pid"] != first["pid"]
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_crash_mid_invoke_then_recovery():
    """A runtime exiting mid-invoke answers Runtime.ExitError; the next invoke respawns."""
    daemon = await start(config())
    try:
        status, headers, doc = await invoke_json(daemon, {"exit": 7})
        assert headers["x-amz-function-error"] == "Unhandled"
        assert doc["errorType"] == "Runtime.ExitError"
        assert doc["errorMessage"].endswith("Runtime exited with error: exit status 7")
        status, _, doc = await invoke_json(daemon, {"echo": 5})
        assert status == 200 and doc == 5
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_init_error_is_returned_and_retried():
    """/init/error reaches the waiting caller; the next invoke initialises again."""
    daemon = await start(config(environ=dict(os.environ, RT_INIT="error")))
    try:
        for _ in range(2):
            status, headers, doc = await invoke_json(daemon, {})
            assert status == 200 and headers["x-amz-function-error"] == "Unhandled"
            assert doc == {"errorMessage": "bad init", "errorType": "Runtime.TestInit"}
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_exit_before_first_next_and_bad_handler():
    """Exit during init gives Runtime.ExitError; awslambdaric with a missing module gives its init error."""
    daemon = await start(config(environ=dict(os.environ, RT_INIT="exit")))
    try:
        _, _, doc = await invoke_json(daemon, {})
        assert doc["errorType"] == "Runtime.ExitError"
        assert doc["errorMessage"].endswith("exit status 3")
    finally:
        await daemon.stop()
    daemon = await start(python_echo(command=(os.sys.executable, "-m", "awslambdaric", "missing.handler"), handler="missing.handler"))
    try:
        _, headers, doc = await invoke_json(daemon, {})
        assert headers["x-amz-function-error"] == "Unhandled"
        assert doc["errorType"] == "Runtime.ImportModuleError"
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_runtime_misuse_gets_documented_answers(tmp_path):
    """Unknown ids get 400, second posts 403, trailers make a function error; serving goes on."""
    daemon = await start(config())
    record = tmp_path / "codes"
    try:
        _, _, doc = await invoke_json(daemon, {"bogus": True, "echo": 1, "record": str(record)})
        assert doc == 1
        _, _, doc = await invoke_json(daemon, {"double": True, "echo": 2, "record": str(record)})
        assert doc == 2
        _, headers, doc = await invoke_json(daemon, {"trailer": "Runtime.Broken", "record": str(record)})
        assert headers["x-amz-function-error"] == "Unhandled"
        assert doc == {"errorType": "Runtime.Broken", "errorMessage": ""}
        _, _, doc = await invoke_json(daemon, {"echo": 3})
        assert doc == 3
        assert record.read_text().split() == ["400", "202", "202", "403", "403", "202"]
        status, _, body = await curl(
            "-XPOST", f"http://127.0.0.1:{daemon.runtime_port}/2018-06-01/runtime/invocation/nope/response", "-d", "{}"
        )
        assert status == 400 and json.loads(body)["errorType"] == "InvalidRequestID"
        status, _, body = await curl(f"http://127.0.0.1:{daemon.runtime_port}/2018-06-01/nothing")
        assert status == 404 and json.loads(body)["errorType"] == "NotFound"
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_oversize_request_and_response(tmp_path):
    """A request over the limit gets 413 before running; a response over it gets Function.ResponseSizeTooLarge."""
    daemon = await start(config(max_request_bytes=1000, max_response_bytes=2000))
    big = tmp_path / "big.json"
    big.write_text(json.dumps("y" * 5000))
    try:
        status, headers, body = await curl("-XPOST", daemon.invoke_url(), "--data-binary", f"@{big}")
        assert status == 413 and headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
        assert json.loads(body)["message"] == "Request must be smaller than 1000 bytes for the InvokeFunction operation"
        record = tmp_path / "codes"
        _, headers, doc = await invoke_json(daemon, {"big": 3000, "record": str(record)})
        assert headers["x-amz-function-error"] == "Unhandled"
        assert doc == {
            "errorType": "Function.ResponseSizeTooLarge",
            "errorMessage": "Response payload size exceeded maximum allowed payload size (2000 bytes).",
        }
        _, _, doc = await invoke_json(daemon, {"echo": "still here"})
        assert doc == "still here"
        assert record.read_text().split() == ["413"]
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_oversize_content_length_is_refused_before_the_upload(tmp_path):
    """With Expect: 100-continue an oversized Content-Length gets 413 instead of 100 Continue."""
    daemon = await start(config(max_request_bytes=1_000_000))
    big = tmp_path / "big.json"
    big.write_bytes(b'"' + b"z" * 2_000_000 + b'"')
    try:
        import subprocess

        out = await in_thread(
            subprocess.run,
            ["curl", "-sv", "-XPOST", daemon.invoke_url(), "--data-binary", f"@{big}"],
            capture_output=True, timeout=60,
        )
        assert b"> Expect: 100-continue" in out.stderr
        assert b"< HTTP/1.1 100" not in out.stderr
        assert b"< HTTP/1.1 413" in out.stderr
        assert b"RequestEntityTooLargeException" in out.stderr
        _, _, doc = await invoke_json(daemon, {"echo": "ok"})
        assert doc == "ok"
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_runtime_api_ping_and_wrong_method():
    """GET /ping answers pong; a wrong method on a known route gets 405 with Allow."""
    daemon = await start(config())
    base = f"http://127.0.0.1:{daemon.runtime_port}/2018-06-01"
    try:
        status, headers, body = await curl(f"{base}/ping")
        assert (status, body) == (200, b"pong")
        status, headers, body = await curl("-XPOST", f"{base}/runtime/invocation/next")
        assert status == 405 and "GET" in headers["allow"]
        assert json.loads(body)["errorType"] == "MethodNotAllowed"
        status, headers, body = await curl("-I", f"{base}/runtime/invocation/next")
        assert status == 405
        status, headers, body = await curl("-XPOST", f"{base}/runtime//init/error", "-d", "{}")
        assert status == 404 and json.loads(body) == {
            "errorMessage": "Unknown Runtime API route",
            "errorType": "NotFound",
        }
        status, headers, body = await curl(
            "-XPOST", f"http://127.0.0.1:{daemon.runtime_port}/2018-06-01/runtime/invocation/x/response", "-d", "{}"
        )
        assert body == b'{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}'
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_event_and_dryrun(tmp_path):
    """Event answers 202 at once and runs; DryRun answers 204 and runs nothing."""
    daemon = await start(config())
    record = tmp_path / "codes"
    try:
        status, headers, body = await curl(
            "-XPOST", daemon.invoke_url(), "-H", "X-Amz-Invocation-Type: Event",
            "-d", json.dumps({"echo": 1, "record": str(record)}),
        )
        assert status == 202 and body == b"" and headers["x-amzn-requestid"]
        for _ in range(100):
            if record.exists():
                break
            await in_thread(time.sleep, 0.05)
        assert record.read_text().split() == ["202"]
        status, headers, body = await curl(
            "-XPOST", daemon.invoke_url(), "-H", "X-Amz-Invocation-Type: DryRun",
            "-d", json.dumps({"record": str(record)}),
        )
        assert status == 204
        _, _, doc = await invoke_json(daemon, {"echo": 2})
        assert doc == 2 and record.read_text().split() == ["202"]
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_busy_runtime_queues_callers_in_order():
    """Invocations arriving while the only runtime is busy wait and all succeed."""
    daemon = await start(config(timeout=10))
    try:
        calls = [invoke_json(daemon, {"sleep": 0.3, "echo": i}) for i in range(4)]
        results = await defer.gatherResults([defer.Deferred.fromCoroutine(c) for c in calls])
        assert [doc for _, _, doc in results] == [0, 1, 2, 3]
    finally:
        await daemon.stop()
