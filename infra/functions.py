"""Python Lambda functions, all made the same way: one role and one log group per function.

Every framesink function (websocket routes now; create-bot and query later) comes from
FunctionFactory.create, which gives it
- the shared code asset (framesink_core + framesink_handlers + wheels, see bundling.py),
- its own IAM role, holding only: write to its own log group, X-Ray, and the statements
  the caller passes (kept in a separate policy so the tests and cdk-nag can see them apart),
- its own log group with the configured retention,
- active X-Ray tracing, Powertools settings and framesink's settings (names and ARNs only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration, Size
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from framesink_core.shared.settings import Settings

from .bundling import lambda_code
from .settings import InfraSettings

# The newest Python runtime aws-cdk-lib knows (cdk-nag's AwsSolutions-L1 checks exactly that).
RUNTIME = lambda_.Runtime.PYTHON_3_14
METRICS_NAMESPACE = "framesink"
LOG_LEVEL = "INFO"


class PythonFunction(Construct):
    """A function with its role, log group and (optional) access policy."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        code: lambda_.Code,
        settings: InfraSettings,
        handler: str,
        description: str,
        environment: Mapping[str, str],
        statements: Sequence[iam.PolicyStatement],
        memory_size: int,
        timeout: Duration,
        ephemeral_storage: Size | None = None,
        reserved_concurrency: int | None = None,
    ):
        super().__init__(scope, id)
        self.log_group = logs.LogGroup(
            self, "Logs", retention=settings.log_retention, removal_policy=settings.removal_policy
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"framesink {id}: {description}",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=settings.architecture,
            code=code,
            handler=handler,
            description=description,
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            memory_size=memory_size,
            timeout=timeout,
            environment=dict(environment),
            ephemeral_storage_size=ephemeral_storage,
            reserved_concurrent_executions=reserved_concurrency,
        )
        # Not AWSLambdaBasicExecutionRole (logs:CreateLogGroup/PutLogEvents on every group):
        # the group exists, so the function only needs to write streams into its own.
        self.log_group.grant_write(self.role)
        self.policy: iam.Policy | None = None
        if statements:
            self.policy = iam.Policy(self, "Access", statements=list(statements), roles=[self.role])
            self.function.node.add_dependency(self.policy)  # no cold start before its grants
        NagSuppressions.add_resource_suppressions(
            self.role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="X-Ray active tracing: xray:PutTraceSegments/PutTelemetryRecords do "
                    "not support resource-level permissions, so their resource must be '*'. "
                    "This is the only wildcard in the role's default policy.",
                    applies_to=["Resource::*"],
                )
            ],
            apply_to_children=True,
        )


class FunctionFactory:
    """Makes framesink's functions; ``functions`` lists them (monitoring alarms on each).

    ``core`` is the core's settings (bucket, table, secret ids, limits), the same the
    container receiver gets, so every adapter runs with one configuration."""

    def __init__(self, *, settings: InfraSettings, core: Settings, service_name: str):
        self.settings = settings
        # One asset object shared by every function: bundled and uploaded once.
        self.code = lambda_code(RUNTIME, settings.architecture)
        self.service_name = service_name
        self.core = core
        self.environment: dict[str, str] = {
            "POWERTOOLS_SERVICE_NAME": self.service_name,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "LOG_LEVEL": LOG_LEVEL,
            **core.as_env(),
        }
        self.functions: list[PythonFunction] = []
        self._media_code: lambda_.Code | None = None

    @property
    def media_code(self) -> lambda_.Code:
        """The media asset (Pillow, PyAV), built only when a function uses it."""
        if self._media_code is None:
            self._media_code = lambda_code(RUNTIME, self.settings.architecture, media=True)
        return self._media_code

    def create(
        self,
        scope: Construct,
        id: str,
        *,
        handler: str,
        description: str,
        statements: Sequence[iam.PolicyStatement] = (),
        memory_size: int = 256,
        timeout: Duration = Duration.seconds(10),
        environment: Mapping[str, str] | None = None,
        code: lambda_.Code | None = None,
        ephemeral_storage: Size | None = None,
        reserved_concurrency: int | None = None,
    ) -> PythonFunction:
        made = PythonFunction(
            scope,
            id,
            code=code or self.code,
            settings=self.settings,
            handler=handler,
            description=description,
            environment={**self.environment, **(environment or {})},
            statements=statements,
            memory_size=memory_size,
            timeout=timeout,
            ephemeral_storage=ephemeral_storage,
            reserved_concurrency=reserved_concurrency,
        )
        self.functions.append(made)
        return made
