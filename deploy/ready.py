#!/usr/bin/env python3
"""Reads `pactdb status --json` on stdin; exits 0 when the cluster is ready:
every group has a leader, every node named in the cluster map answers, and
node N (argv[1], optional) is back in every group the map's views gave it
(argv[2:]: those group ids) with its applied index caught up with the
group's leader. Prints what it is still waiting for otherwise (exit 1)."""
import json
import sys

status = json.load(sys.stdin)
node = int(sys.argv[1]) if len(sys.argv) > 1 else None
groups_of_node = {int(g) for g in sys.argv[2:]}
waiting = []
for g in status["groups"]:
    if g.get("leader") is None:
        waiting.append(f"group {g['group']} has no leader")
    if node is not None and g["group"] in groups_of_node and node not in g["members"]:
        waiting.append(f"node {node} is not back in group {g['group']}")
replicas = {}
for n in status["nodes"]:
    if not n.get("up"):
        waiting.append(f"node {n['node']} does not answer")
    for r in n.get("replicas", []):
        replicas[(n["node"], r["group"])] = r
if node is not None:
    for g in status["groups"]:
        if g["group"] not in groups_of_node or g.get("leader") is None:
            continue
        mine, lead = replicas.get((node, g["group"])), replicas.get((g["leader"], g["group"]))
        if mine is None or lead is None:
            waiting.append(f"no report of group {g['group']} from node {node} or its leader")
        elif mine["applied_index"] + 1000 < lead["commit_index"]:
            waiting.append(f"node {node} is {lead['commit_index'] - mine['applied_index']} entries behind in group {g['group']}")
if waiting:
    print("; ".join(waiting))
    sys.exit(1)
