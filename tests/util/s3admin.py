"""S3 housekeeping for the tests, through boto3 (moto's own dependency):
buckets with versioning or Object Lock, and what a bucket holds, read
independently of lethe's code.

    s3admin.py ENDPOINT versioned BUCKET
    s3admin.py ENDPOINT locked BUCKET
    s3admin.py ENDPOINT put-locked BUCKET KEY      (COMPLIANCE retention, 1 day)
    s3admin.py ENDPOINT delete BUCKET KEY          (a delete marker)
    s3admin.py ENDPOINT versions BUCKET PREFIX     (JSON: [[key, version, is_marker], ...])
"""
import datetime
import json
import sys

import boto3

endpoint, command, bucket = sys.argv[1:4]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="lethe-test-key",
    aws_secret_access_key="lethe-test-secret",
    region_name="us-east-1",
)


def create(**extra):
    try:
        s3.create_bucket(Bucket=bucket, **extra)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


if command == "versioned":
    create()
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
elif command == "locked":
    create(ObjectLockEnabledForBucket=True)
elif command == "put-locked":
    s3.put_object(
        Bucket=bucket,
        Key=sys.argv[4],
        Body=b"locked payload",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=datetime.datetime.now(datetime.timezone.utc)
        + datetime.timedelta(days=1),
    )
elif command == "delete":
    s3.delete_object(Bucket=bucket, Key=sys.argv[4])
elif command == "versions":
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=sys.argv[4]):
        for v in page.get("Versions", []):
            out.append([v["Key"], v["VersionId"], False])
        for m in page.get("DeleteMarkers", []):
            out.append([m["Key"], m["VersionId"], True])
    print(json.dumps(sorted(out)))
else:
    sys.exit(f"unknown command {command}")
