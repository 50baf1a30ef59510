#!/usr/bin/env python3
"""The naive Dataverse client of benches/dataverse.sh: lists the keys of
quotes, opportunities and leads (paged by @odata.nextLink), then deletes
every row with one DELETE request each (If-Match on the etag it listed),
children first, THREADS requests in flight, no batching. Prints the number
of rows deleted.

Usage: dataverse_naive.py PROXY_URL DIRECT_URL THREADS
"""
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

proxy, direct, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
root = "/api/data/v9.2/"
form = urllib.parse.urlencode({
    "grant_type": "client_credentials",
    "client_id": os.environ["AZURE_CLIENT_ID"],
    "client_secret": os.environ["AZURE_CLIENT_SECRET"],
    "scope": proxy + "/.default",
}).encode()
token = json.load(urllib.request.urlopen(
    f"{direct}/{os.environ['AZURE_TENANT_ID']}/oauth2/v2.0/token", form))["access_token"]
host = urllib.parse.urlparse(proxy).netloc
local = threading.local()


def conn():
    if not hasattr(local, "c"):
        local.c = http.client.HTTPConnection(host, timeout=120)
    return local.c


def request(method, path, headers=None):
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    h.update(headers or {})
    attempt = 0
    while attempt < 5:
        attempt += 1
        try:
            c = conn()
            c.request(method, path, headers=h)
            r = c.getresponse()
            body = r.read()
            if r.status == 429:
                # Service protection: wait as told, then again (any
                # correct client must; the wait does not count as a try).
                time.sleep(int(r.getheader("Retry-After", "1")))
                continue
            return r.status, body
        except (ConnectionError, http.client.HTTPException):
            local.__dict__.pop("c", None)
    raise RuntimeError(f"{method} failed")


def keys(entity_set, key):
    out, path = [], f"{root}{entity_set}?$select={key}"
    while path:
        status, body = request("GET", path, {"Prefer": "odata.maxpagesize=5000"})
        assert status == 200, (status, body[:200])
        page = json.loads(body)
        out += [(r[key], r["@odata.etag"]) for r in page["value"]]
        link = page.get("@odata.nextLink")
        path = urllib.parse.urlparse(link).path + "?" + urllib.parse.urlparse(link).query if link else None
    return out


deleted = 0
with ThreadPoolExecutor(threads) as pool:
    for entity_set, key in (("quotes", "quoteid"), ("opportunities", "opportunityid"), ("leads", "leadid")):
        rows = keys(entity_set, key)
        def delete(row):
            status, _ = request("DELETE", f"{root}{entity_set}({row[0]})", {"If-Match": row[1]})
            return status == 204
        deleted += sum(pool.map(delete, rows))
print(deleted)
