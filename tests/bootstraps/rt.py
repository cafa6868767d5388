#!/usr/bin/env python3
"""
A small Runtime API client for tests, driven by its events (a JSON object):

  {"echo": x}            respond x
  {"sleep": s}           sleep s seconds first
  {"exit": n}            exit with status n while holding the invocation
  {"fail": "msg"}        POST /error
  {"pid": true}          respond {"pid": <pid>, "ppid": ..., "pgid": ...}
  {"grandchild": path}   start a sleeping grandchild, write its pid to path, then sleep forever
  {"big": n}             respond with n bytes ("x" * n inside a JSON string)
  {"record": path, ...}  append the HTTP status of each extra call below to path (one per line)
  {"double": true}       after the response, post a second /response and /error (403s)
  {"bogus": true}        post a /response for an unknown request id (400) before the real one
  {"trailer": "T"}       send the response chunked with a Lambda-Runtime-Function-Error-Type trailer
  {"allocate_mb": n}     allocate and touch n MB, then respond

At start: RT_INIT=error posts /init/error and exits 1; RT_INIT=exit exits 3; RT_INIT=hang sleeps.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import time

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
host, _, port = API.rpartition(":")
conn = http.client.HTTPConnection(host.strip("[]"), int(port))


def call(method, path, body=None, headers=None):
    conn.request(method, "/2018-06-01" + path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.getheaders(), r.read()


def record(event, status):
    if "record" in event:
        with open(event["record"], "a") as f:
            f.write(f"{status}\n")


def chunked_with_trailer(request_id, body, error_type):
    s = socket.create_connection((host.strip("[]"), int(port)))
    s.sendall(
        f"POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n"
        f"Host: {API}\r\nTransfer-Encoding: chunked\r\n"
        "Trailer: Lambda-Runtime-Function-Error-Type\r\n\r\n".encode()
        + b"%x\r\n" % len(body) + body + b"\r\n0\r\n"
        + f"Lambda-Runtime-Function-Error-Type: {error_type}\r\n\r\n".encode()
    )
    answer = s.recv(65536)
    s.close()
    return int(answer.split()[1])


mode = os.environ.get("RT_INIT")
if mode == "error":
    call("POST", "/runtime/init/error", json.dumps({"errorMessage": "bad init", "errorType": "Runtime.TestInit"}),
         {"Lambda-Runtime-Function-Error-Type": "Runtime.TestInit"})
    sys.exit(1)
if mode == "exit":
    sys.exit(3)
if mode == "hang":
    time.sleep(3600)

while True:
    status, headers, body = call("GET", "/runtime/invocation/next")
    h = {k.lower(): v for k, v in headers}
    rid = h["lambda-runtime-aws-request-id"]
    event = json.loads(body)
    if not isinstance(event, dict):
        call("POST", f"/runtime/invocation/{rid}/response", body)
        continue
    if "sleep" in event:
        time.sleep(event["sleep"])
    if "exit" in event:
        os._exit(event["exit"])
    if "grandchild" in event:
        child = subprocess.Popen(["sleep", "3600"])
        with open(event["grandchild"], "w") as f:
            f.write(str(child.pid))
        time.sleep(3600)
    if "bogus" in event:
        record(event, call("POST", "/runtime/invocation/00000000-0000-4000-8000-000000000000/response", b"{}")[0])
    if "fail" in event:
        doc = {"errorMessage": event["fail"], "errorType": "TestError", "stackTrace": []}
        record(event, call("POST", f"/runtime/invocation/{rid}/error", json.dumps(doc),
                           {"Lambda-Runtime-Function-Error-Type": "Unhandled"})[0])
        continue
    if "trailer" in event:
        record(event, chunked_with_trailer(rid, b'{"partial":true}', event["trailer"]))
        continue
    if "pid" in event:
        result = json.dumps({"pid": os.getpid(), "pgid": os.getpgid(0), "headers": h,
                             "env": {k: v for k, v in os.environ.items()}}).encode()
    elif "big" in event:
        result = b'"' + b"x" * event["big"] + b'"'
    elif "allocate_mb" in event:
        block = bytearray(event["allocate_mb"] * 1048576)
        for i in range(0, len(block), 4096):
            block[i] = 1
        result = json.dumps({"allocated": len(block)}).encode()
        del block
    else:
        result = json.dumps(event.get("echo", event)).encode()
    record(event, call("POST", f"/runtime/invocation/{rid}/response", result)[0])
    if event.get("double"):
        record(event, call("POST", f"/runtime/invocation/{rid}/response", b"{}")[0])
        record(event, call("POST", f"/runtime/invocation/{rid}/error", b"{}")[0])
