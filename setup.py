from setuptools import find_packages, setup

setup(
    name="lambdatx",
    version="0.1.0",
    description="Run unmodified AWS Lambda functions anywhere: a Twisted daemon serving the "
    "Lambda Runtime API and Invoke API over HTTP and AMQP-RPC.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(exclude=["tests*", "bench*", "examples*"]) + ["twisted.plugins"],
    package_data={"lambdatx": ["amqp0-9-1.xml", "LICENSE-rabbitmq-spec"]},
    include_package_data=True,
    install_requires=[
        # Private-name workarounds (NOTES.md) are pinned by tests/test_pins.py.
        "Twisted>=26.10,<27",
        "klein>=24.8,<25",
        "txAMQP==0.8.2",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2.3",
            "treq>=23",
            "psutil>=5.9",
            "boto3>=1.34",
            "awscli>=1.32",
            "pika>=1.3",
            "awslambdaric>=3",
        ],
    },
    entry_points={
        "console_scripts": [
            "lambdatx = lambdatx.cli:main",
            "lambdatx-server = lambdatx.gateway_cli:main",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
    ],
)
