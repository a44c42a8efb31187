"""The local stack: everything `framesink local`, `make demo` and the tests run on one machine.

    aws        the bucket, table, secrets and feed, provisioned in moto as the CDK stack has them
    functions  the real Lambda handlers here: context, environment, queue and webhook sources
    apigw      an API Gateway WebSocket stage in front of the handlers (its limits included)
    stack      LocalStack: moto + an ingress + the webhook route, export job and analyzer
"""

from framesink.local.apigw import APIGW_IDLE_TIMEOUT, APIGW_MAX_AGE, APIGW_MAX_FRAME_BYTES, APIGW_MAX_MESSAGE_BYTES
from framesink.local.functions import FAKE_CREDENTIALS, lambda_environment, local_lambda_env
from framesink.local.stack import DEFAULT_PORT, LocalConfig, LocalStack, background_stack, write_state_file

__all__ = ["APIGW_IDLE_TIMEOUT", "APIGW_MAX_AGE", "APIGW_MAX_FRAME_BYTES", "APIGW_MAX_MESSAGE_BYTES", "DEFAULT_PORT",
           "FAKE_CREDENTIALS", "LocalConfig", "LocalStack", "background_stack", "lambda_environment",
           "local_lambda_env", "write_state_file"]
