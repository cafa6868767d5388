"""The ``twistd lambdatx`` plugin: only a ServiceMaker; the wiring lives in ``lambdatx.tap``."""

from twisted.application.service import ServiceMaker

lambdatx = ServiceMaker(
    "lambdatx",
    "lambdatx.tap",
    "Run an unmodified AWS Lambda function (aws-lambda-rie compatible daemon).",
    "lambdatx",
)
