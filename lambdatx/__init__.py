"""
lambdatx: run unmodified AWS Lambda functions anywhere.

Layout
======

``config``       Config (frozen) from the environment and options; every problem at once.
``cli``, ``tap`` the ``lambdatx`` console script (aws-lambda-rie argv) and ``twistd lambdatx``.
``entrypoint``   what the daemon's and the gateway's entry points share: exit codes, --help and
                 --version, problem lines, the console scripts' run loop, twistd options.
``service``      ``make_service(config, reactor)``: listeners, dispatcher, AMQP; ordered stop.
``lifecycle``    what the daemon's and the gateway's services share: listening, the
                 ready/finished waiters, the shutdown grace.
``invoke_api``   Invoke API 2015-03-31 (Klein); ``validate`` and ``wire`` are shared with AMQP.
``http_answers`` the Invoke API's HTTP side, shared with the gateway: header names, request
                 ids, error, empty and probe answers.
``runtime_api``  Runtime API 2018-06-01 (Klein), one listener per instance plus the shared one.
``dispatcher``   FIFO queue, idle-instance slots, spawn decisions, queue deadlines.
``instance``     one runtime process group's state machine (starting … dead).
``launcher``     listener + environment + process for a new instance.
``process``      child processes in their own session, exit status, output pass-through.
``reports``      START / END / REPORT / INIT_REPORT lines and the log tail.
``httpserver``   twisted.web fixes: bodies in memory and bounded, chunked trailers, quiet.
``amqp_*``       AMQP-RPC consumer on RabbitMQ (txAMQP), enabled by AMQP_URI: URI parsing,
                 connection and backoff, sessions, request/reply messages.
``gateway*``     ``lambdatx-server``: the Invoke API for any function name, routed through
                 RabbitMQ to the daemons (``twistd lambdatx-server``).

Theory of operation
===================

Callers (HTTP, AMQP) turn requests into validated :class:`~lambdatx.invocation.Invocation`
objects and hand them to the one :class:`~lambdatx.dispatcher.Dispatcher`, which answers each
with a Deferred. The dispatcher gives an invocation to the most recently idle instance, or
spawns a new instance for it while fewer than MAX_CONCURRENCY are live, or queues it (FIFO,
with a deadline of T). Every instance has its own loopback Runtime API listener, so each
request a runtime makes is attributed to its instance without looking at connections. An
instance is busy from the moment its ``/next`` returns an event until it polls again; its
``/response`` answers the caller at once. A timeout kills the instance's whole process group.

Shutdown (SIGTERM/SIGINT): stop intake, let running invocations finish within the grace,
answer what is left, TERM then KILL every group, close the listeners, exit 0.
"""

__version__ = "0.1.0"
