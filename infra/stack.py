"""The framesink stack: shared parts first, then one construct per ingress or API.

Adding a part (create-bot API, query API, container ingress) is one construct in its own
module, built in ``__init__`` below with ``stack=self``. What parts use:
- ``stack.settings``   InfraSettings (context)
- ``stack.storage``    ``.bucket`` (frames), ``.table`` (index), ``.access_logs``
- ``stack.secrets``    ``.token_secret``, ``.read_statements()``, verification secret name/ARN
- ``stack.functions``  FunctionFactory: ``.create(self, "Id", handler=..., statements=[...])``
- ``stack.websocket``  ``.url`` (wss://.../<stage>), ``.api``, ``.stage``; None if ingress=container
- ``stack.container``  ContainerIngress (``.url``, ``.load_balancer``...); None if ingress=apigw
- ``stack.ingress_url`` the websocket URL create-bot hands to Recall (the container's if any)
Monitoring comes last: it alarms on every function the factory made.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack, Tags
from constructs import Construct

from .bot_api import BotApi
from .container_ingress import ContainerIngress
from .functions import FunctionFactory
from .monitoring import Monitoring
from .query_api import QueryApi
from .secrets import Secrets
from .settings import InfraSettings
from .storage import Storage
from .websocket_ingress import WebSocketIngress


class FramesinkStack(Stack):
    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings, **kwargs):
        super().__init__(
            scope,
            id,
            description=f"framesink ({settings.stage}): Recall.ai real-time video frames to S3 + DynamoDB",
            **kwargs,
        )
        self.settings = settings
        Tags.of(self).add("project", "framesink")
        Tags.of(self).add("stage", settings.stage)

        # Shared by every part.
        self.storage = Storage(self, "Storage", settings=settings)
        self.secrets = Secrets(self, "Secrets", settings=settings)
        self.functions = FunctionFactory(settings=settings, storage=self.storage, secrets=self.secrets)

        # Ingress and APIs: one construct each.
        # The `ingress` setting picks API Gateway, the container receiver, or both. With a
        # container, bots are sent to it: it takes real-size frames (README "limits").
        self.websocket = WebSocketIngress(self, "WebSocket", stack=self) if settings.apigw_ingress else None
        self.container = ContainerIngress(self, "Container", stack=self) if settings.container_ingress else None
        self.ingress_url: str = self.container.url if self.container else self.websocket.url
        self.bot_api = BotApi(self, "BotApi", stack=self)  # infra/bot_api.py
        self.query_api = QueryApi(self, "QueryApi", stack=self)

        self.monitoring = Monitoring(self, "Monitoring", stack=self)

        # Output ids are a contract for the CLI (it reads them with describe-stacks).
        CfnOutput(self, "WebSocketUrl", value=self.ingress_url,
                  description="Give Recall this URL with ?token=<token> appended")  # fmt: skip
        if self.websocket is not None and self.container is not None:
            CfnOutput(self, "ApiGatewayWebSocketUrl", value=self.websocket.url,
                      description="API Gateway ingress (frames up to 32 KB only), with ?token=<token>")  # fmt: skip
        if self.container is not None:
            CfnOutput(self, "ContainerWebSocketUrl", value=self.container.url,
                      description="Container ingress (no 32 KB limit), with ?token=<token> appended")  # fmt: skip
            CfnOutput(self, "LoadBalancerDnsName", value=self.container.load_balancer.load_balancer_dns_name,
                      description="Point domainName (CNAME/alias) here when certificateArn is set")  # fmt: skip
        CfnOutput(self, "BucketName", value=self.storage.bucket.bucket_name)
        CfnOutput(self, "TableName", value=self.storage.table.table_name)
        CfnOutput(self, "Region", value=self.region)
        CfnOutput(self, "FrameExpiryDays", value=str(settings.frame_expiry_days),
                  description="Days until frames and their index items expire (0 = never); framesink reindex reads it")  # fmt: skip
        CfnOutput(self, "QueryApiUrl", value=self.query_api.url,
                  description="Query API (IAM auth, SigV4): GET recordings/{id}/participants, recordings/{id}/frames")  # fmt: skip
        if self.secrets.token_secret is not None:
            CfnOutput(self, "TokenSecretArn", value=self.secrets.token_secret.secret_arn,
                      description="ARN of the shared connection token (read it with get-secret-value)")  # fmt: skip
