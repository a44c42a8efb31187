"""The bottom layer every other part stands on: the storage schema (keys, item layout, ids),
settings and their bounds, DynamoDB item (de)serialization and client settings, the S3 write
contract, logging and metrics. Imports nothing else of framesink_core."""
