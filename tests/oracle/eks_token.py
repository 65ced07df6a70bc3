"""The EKS bearer token as aws-iam-authenticator / `aws eks get-token` make it, computed with
botocore's own SigV4 query signer: the independent oracle for stashless's eks::token.

usage: eks_token.py ACCESS_KEY SECRET_KEY SESSION_TOKEN|- REGION CLUSTER UNIX_SECONDS
prints the token (k8s-aws-v1. + unpadded base64url of the presigned URL)."""
import base64
import datetime
import sys

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

access, secret, session, region, cluster, unix = sys.argv[1:7]
fixed = datetime.datetime.fromtimestamp(int(unix), tz=datetime.timezone.utc).replace(tzinfo=None)

# botocore reads the clock in one place; pin it so the signature is reproducible.
if hasattr(botocore.auth, "get_current_datetime"):
    botocore.auth.get_current_datetime = lambda: fixed
else:  # older botocore
    class _Frozen(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return fixed
    botocore.auth.datetime.datetime = _Frozen

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
