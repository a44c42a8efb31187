"""The container receiver: the deployed adapter that runs the core on ECS Fargate behind an
ALB (real-size frames, no API Gateway limits). It sits beside framesink_handlers (the Lambda
adapters); it is not in the Lambda asset (infra/bundling.py copies only the core and the
handlers) and the CLI only starts it (`framesink receive`, `framesink local --ingress direct`).

    config      defaults, the container's environment, the command line flags
    connection  one connection: handshake facts, state, the unread-bytes bound, its close
    server      Receiver: handshake auth, messages to the core, backpressure, keepalive, spool
                drain, shutdown
    main        the process: serve until SIGTERM, print a summary
"""

from framesink_receiver.config import (
    DEFAULT_MAX_IN_FLIGHT,
    HEALTH_PATH,
    MAX_IN_FLIGHT_ENV,
    PORT_ENV,
    ReceiverConfig,
    add_arguments,
    max_message_bytes,
)
from framesink_receiver.main import main, receiver_service, run
from framesink_receiver.server import Receiver

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "HEALTH_PATH", "MAX_IN_FLIGHT_ENV", "PORT_ENV", "Receiver", "ReceiverConfig",
           "add_arguments", "main", "max_message_bytes", "receiver_service", "run"]
