"""The Authorization header botocore's SigV4 signer puts on the sts:GetCallerIdentity
request a Vault `aws` auth login carries: the independent oracle for stashless's
aws_login::caller_identity_request.

usage: sts_login.py ACCESS_KEY SECRET_KEY SESSION_TOKEN|- REGION|- SERVER_ID|- UNIX_SECONDS
prints the Authorization header value."""
import sys

import botocore.auth
import pinned_clock
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

access, secret, session, region, server_id, unix = sys.argv[1:7]
pinned_clock.pin(unix)

host = "sts.amazonaws.com" if region == "-" else f"sts.{region}.amazonaws.com"
headers = {"Host": host, "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
if server_id != "-":
    headers["X-Vault-AWS-IAM-Server-ID"] = server_id
request = AWSRequest(
    method="POST",
    url=f"https://{host}/",
    data="Action=GetCallerIdentity&Version=2011-06-15",
    headers=headers,
)
creds = Credentials(access, secret, None if session == "-" else session)
botocore.auth.SigV4Auth(creds, "sts", "us-east-1" if region == "-" else region).add_auth(request)
print(request.headers["Authorization"])
