"""Times pages of lethe's dashboard in headless Chromium, for benches/ui.sh.

    ui_timing.py DRIVER_URL BASE TOKEN REPEAT PATH...

Talks W3C WebDriver to chromedriver over plain HTTP (no client library):
opens a session, signs in through /ui/login with TOKEN, then loads each PATH
REPEAT times and reads the navigation's Paint Timing (first contentful
paint) and Navigation Timing (load event end), both in ms from the
navigation's start, and when the page's HTML had arrived (responseEnd).
Prints one line per path: PATH, median responseEnd, FCP, load.
"""

import json
import statistics
import sys
import time
import urllib.request

driver, base, token, repeat, paths = (
    sys.argv[1],
    sys.argv[2],
    sys.argv[3],
    int(sys.argv[4]),
    sys.argv[5:],
)


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        driver + path,
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)["value"]


caps = {
    "capabilities": {
        "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--window-size=1280,900"],
            },
        }
    }
}
session = call("POST", "/session", caps)["sessionId"]
s = "/session/" + session
try:
    call("POST", s + "/url", {"url": base + "/ui/login"})
    field = call("POST", s + "/element", {"using": "css selector", "value": "#token"})
    field_id = list(field.values())[0]
    call("POST", s + "/element/" + field_id + "/value", {"text": token})
    button = call(
        "POST", s + "/element", {"using": "css selector", "value": "button[type=submit]"}
    )
    call("POST", s + "/element/" + list(button.values())[0] + "/click", {})
    # The click submits the form; its answer arrives when it arrives.
    for _ in range(100):
        url = call("GET", s + "/url")
        if "/ui/login" not in url:
            break
        time.sleep(0.1)
    else:
        sys.exit("signing in failed: still on " + url)
    script = """
        const nav = performance.getEntriesByType('navigation')[0];
        const fcp = performance.getEntriesByName('first-contentful-paint')[0];
        return [nav.responseEnd, fcp ? fcp.startTime : nav.domContentLoadedEventEnd, nav.loadEventEnd];
    """
    for path in paths:
        html, fcps, loads = [], [], []
        for _ in range(repeat):
            call("POST", s + "/url", {"url": base + path})
            got, fcp, load = call(
                "POST", s + "/execute/sync", {"script": script, "args": []}
            )
            html.append(got)
            fcps.append(fcp)
            loads.append(load)
        print(
            "%s\t%.1f\t%.1f\t%.1f"
            % (
                path,
                statistics.median(html),
                statistics.median(fcps),
                statistics.median(loads),
            )
        )
finally:
    call("DELETE", s)
