"""The container receiver: the deployed adapter that runs the core on ECS Fargate behind an
ALB (real-size frames, no API Gateway limits). It sits beside framesink_handlers (the Lambda
adapters); it is not in the Lambda asset (infra/bundling.py copies only the core and the
handlers) and the CLI only starts it (`framesink receive`, `framesink local --ingress direct`).
"""

from .server import (
    HEALTH_PATH,
    MAX_IN_FLIGHT_ENV,
    PORT_ENV,
    DEFAULT_MAX_IN_FLIGHT,
    Receiver,
    ReceiverConfig,
    add_arguments,
    main,
    max_message_bytes,
    receiver_service,
    run,
)

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "HEALTH_PATH", "MAX_IN_FLIGHT_ENV", "PORT_ENV", "Receiver", "ReceiverConfig",
           "add_arguments", "main", "max_message_bytes", "receiver_service", "run"]
