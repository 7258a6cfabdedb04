#!/usr/bin/env python3
"""The web view in headless Chromium (run by tests/web_view.rs).

Loads `/` of one node of a running demo, reads from the DOM the leader and
epoch of a passive group that this node does not lead, kill -9's that
leader (its pid from cluster.json), and waits, bounded, until the DOM shows
another leader at a higher epoch and the killed node as down. Every wait is
bounded; the exit code is 0 only if every check held.

usage: web_view.py URL CLUSTER_JSON SERVING_NODE [SCREENSHOT]
"""

import json
import os
import signal
import sys
import threading
import time
import urllib.request

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:
    sys.exit("this test needs Python's selenium (PyPI package `selenium`; .ci/run installs it)")

# How long the page may take to show the cluster, and then the failover.
LOAD_WAIT_S = 30
FAILOVER_WAIT_S = 60
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def wait_for(what, seconds, check):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # the DOM is redrawn every second: retry
            last = e
        time.sleep(0.2)
    fail(f"{what}: not within {seconds} s (last: {last!r})")


class Load(threading.Thread):
    """Puts through the HTTP API, one at a time, until stopped: the
    sparklines get something to draw, and writes go on across the failover."""

    def __init__(self, base):
        super().__init__(daemon=True)
        self.base, self.stop, self.ok = base, threading.Event(), 0

    def run(self):
        i = 0
        while not self.stop.is_set():
            req = urllib.request.Request(f"{self.base}v1/kv/web-{i % 500}", data=b"v" * 100, method="PUT")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    self.ok += r.status == 200
            except Exception:
                time.sleep(0.05)
            i += 1


def groups(driver):
    out = {}
    for sec in driver.find_elements(By.CSS_SELECTOR, "section.group"):
        g = sec.get_attribute("data-group")
        out[g] = {
            "leader": int(sec.get_attribute("data-leader")),
            "epoch": int(sec.get_attribute("data-epoch")),
            "mode": sec.get_attribute("data-mode"),
            "rows": {
                int(r.get_attribute("data-node")): r.get_attribute("data-role")
                for r in sec.find_elements(By.CSS_SELECTOR, "tr[data-node]")
            },
        }
    return out


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    url, cluster_json, serving = sys.argv[1], sys.argv[2], int(sys.argv[3])
    screenshot = sys.argv[4] if len(sys.argv) > 4 else None
    for path, package in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")]:
        if not os.path.exists(path):
            sys.exit(f"this test needs {path} (Debian package `{package}`; .ci/run installs it)")
    with open(cluster_json) as f:
        pids = {n["id"]: n["pid"] for n in json.load(f)["nodes"]}

    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900"]:
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(LOAD_WAIT_S)
        driver.get(url)
        load = Load(url)
        load.start()
        # Every group drawn, with each member's row, and sparklines fed.
        wait_for("the page shows 3 groups with 3 members each", LOAD_WAIT_S,
                 lambda: len(groups(driver)) == 3 and all(len(g["rows"]) == 3 for g in groups(driver).values()))
        wait_for("the page polled a few times", LOAD_WAIT_S,
                 lambda: int(driver.find_element(By.ID, "summary").get_attribute("data-polls")) >= 3)
        # The sparklines draw the load: operations/s above zero.
        wait_for("the operations/s sparkline shows the load", LOAD_WAIT_S,
                 lambda: float(driver.find_element(By.ID, "ops-now").text) > 0)
        polled = int(driver.find_element(By.ID, "summary").get_attribute("data-polls"))
        wait_for("the page polled on under load", LOAD_WAIT_S,
                 lambda: int(driver.find_element(By.ID, "summary").get_attribute("data-polls")) >= polled + 6)
        points = driver.find_element(By.CSS_SELECTOR, "#spark-ops polyline").get_attribute("points").split()
        if len(points) < 2:
            fail(f"the operations/s sparkline has {len(points)} points")
        before = groups(driver)
        print("before:", json.dumps(before), flush=True)
        passive = [g for g, v in sorted(before.items()) if v["mode"] == "passive" and v["leader"] != serving]
        if not passive:
            fail(f"no passive group led by another node than {serving}: {before}")
        group = passive[0]
        leader, epoch = before[group]["leader"], before[group]["epoch"]
        if before[group]["rows"].get(leader) != "primary":
            fail(f"group {group}: the leader {leader} is not shown as primary: {before[group]}")
        if screenshot:
            driver.save_screenshot(screenshot)
        print(f"killing node {leader} (pid {pids[leader]}), primary of group {group} at epoch {epoch}", flush=True)
        os.kill(pids[leader], signal.SIGKILL)

        seen = {}

        def failed_over():
            g = groups(driver)[group]
            seen["last"] = g
            return g if g["leader"] != leader and g["epoch"] > epoch else None

        try:
            after = wait_for(f"group {group} shows a new leader after node {leader} died", FAILOVER_WAIT_S, failed_over)
        except SystemExit:
            print("last seen:", seen.get("last"), driver.find_element(By.ID, "summary").text, flush=True)
            raise
        if leader in after["rows"] and after["rows"][leader] != "down":
            fail(f"the dead node {leader} is shown as {after['rows'][leader]}: {after}")
        if after["rows"].get(after["leader"]) != "primary":
            fail(f"the new leader {after['leader']} is not shown as primary: {after}")
        down = driver.find_element(By.ID, "nodes-down").text
        if f"node {leader}" not in down:
            fail(f"the page does not list node {leader} as down: {down!r}")
        print(f"after: group {group} leader {after['leader']} epoch {after['epoch']}", flush=True)
        load.stop.set()
        print(f"{load.ok} puts through the HTTP API during the test", flush=True)
        print("OK", flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
