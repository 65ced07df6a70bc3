"""Pin the clock botocore's signers read, so a signature is reproducible."""
import datetime

import botocore.auth


def pin(unix_seconds):
    fixed = datetime.datetime.fromtimestamp(int(unix_seconds), tz=datetime.timezone.utc).replace(tzinfo=None)
    if hasattr(botocore.auth, "get_current_datetime"):
        botocore.auth.get_current_datetime = lambda: fixed
    else:  # older botocore reads datetime.datetime.utcnow()
        class _Frozen(datetime.datetime):
            @classmethod
            def utcnow(cls):
                return fixed
        botocore.auth.datetime.datetime = _Frozen
