"""The EKS bearer token as aws-iam-authenticator / `aws eks get-token` make it, computed with
botocore's own SigV4 query signer: the independent oracle for stashless's eks::token.

usage: eks_token.py ACCESS_KEY SECRET_KEY SESSION_TOKEN|- REGION CLUSTER UNIX_SECONDS
prints the token (k8s-aws-v1. + unpadded base64url of the presigned URL)."""
import base64
import sys

import botocore.auth
import pinned_clock
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

access, secret, session, region, cluster, unix = sys.argv[1:7]
pinned_clock.pin(unix)

creds = Credentials(access, secret, None if session == "-" else session)
request = AWSRequest(
    method="GET",
    url=f"https://sts.{region}.amazonaws.com/",
    params={"Action": "GetCallerIdentity", "Version": "2011-06-15"},
    headers={"x-k8s-aws-id": cluster},
)
botocore.auth.SigV4QueryAuth(creds, "sts", region, expires=60).add_auth(request)
url = request.prepare().url
print("k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("="))
